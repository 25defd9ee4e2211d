// sensorstream reference sketch: the recommended text format, at a steady 100 Hz.
//
// Each sample is one line of label:value pairs separated by single spaces, ending in CRLF:
//
//   t:12345 a0:1.234 a1:0.567 a2:2.345 sine:0.707
//
// - t is millis() at the moment the inputs were read. sensorstream maps this device
//   clock onto wall time (profile: timestamp_field = "t", timestamp_unit = "ms"), so
//   USB buffering and read jitter on the host do not show up as timing noise.
// - Labels are short, plain ASCII, with no spaces and no ':' '=' ',' ';' in them.
//   A new label appearing later becomes a new channel; keep the set fixed if you can.
// - Values are plain decimals (no units, no thousands separators). Plain decimals of up
//   to 15 characters take sensorstream's fast path; exponents and nan/inf are accepted too.
// - The Arduino IDE's Serial Plotter reads the same lines (t becomes a trace there; uncheck it).
//
// Profile: devices/arduino-plotter.toml. Check the stream with:
//   sensorstream tail arduino/plotter      (while `sensorstream serve` runs with the profile)
//
// Bandwidth: ~48 bytes per line x 100 Hz = 4.8 kB/s, well inside 115200 baud (~11.5 kB/s).
// For more channels or kHz rates, use the binary COBS format (devices/binary-imu.toml).
//
// Commands (sensorstream serve --allow-commands; docs/devices.md, "Commands"): one per
// line, ended by LF, CR or CR+LF, answered with one line that is not data (it shows in
// the dashboard's console pane):
//   LED 1 / LED 0      the built-in LED on or off          -> "OK LED 1"
//   RATE <hz>          samples per second, 1..200          -> "OK RATE 50"
//   ?                  what the sketch understands         -> "# commands: LED 0|1, RATE <hz>, ?"
// Replies start with a word that is not label:value, so the parser does not take them
// for samples. Try:  sensorstream send --stream arduino/plotter "LED 1"

unsigned long period_us = 10000UL;       // 100 Hz; RATE changes it
const float VREF = 5.0;                   // 3.3 on 3.3 V boards
const int ADC_MAX = 1023;                 // 10-bit ADC on AVR boards; 4095 on 12-bit ones

unsigned long next_us;
char cmd[32];           // the command being received (longer ones are dropped)
byte cmd_len = 0;
bool cmd_overflow = false;

void setup() {
  Serial.begin(115200);
  // Native-USB boards (Leonardo, Micro, SAMD): wait briefly for the host to open the port,
  // but do not block forever when running standalone.
  unsigned long t0 = millis();
  while (!Serial && millis() - t0 < 2000) {
  }
  // A banner line is fine: sensorstream counts it as malformed and ignores it.
  Serial.println(F("# sensorstream reference sketch, labels format, 100 Hz"));
  pinMode(LED_BUILTIN, OUTPUT);
  next_us = micros();
}

// One complete command line: act on it and answer with one line.
void runCommand(char *line) {
  if (strcmp(line, "LED 1") == 0 || strcmp(line, "LED 0") == 0) {
    digitalWrite(LED_BUILTIN, line[4] == '1' ? HIGH : LOW);
    Serial.print(F("OK "));
    Serial.println(line);
  } else if (strncmp(line, "RATE ", 5) == 0) {
    long hz = atol(line + 5);
    if (hz >= 1 && hz <= 200) {
      period_us = 1000000UL / hz;
      next_us = micros();
      Serial.print(F("OK RATE "));
      Serial.println(hz);
    } else {
      Serial.println(F("ERR RATE must be 1..200"));
    }
  } else if (strcmp(line, "?") == 0) {
    Serial.println(F("# commands: LED 0|1, RATE <hz>, ?"));
  } else {
    Serial.println(F("ERR unknown command"));
  }
}

// Read what the host sent without waiting: a command ends at CR or LF.
void readCommands() {
  while (Serial.available() > 0) {
    char c = Serial.read();
    if (c == '\r' || c == '\n') {
      if (cmd_len > 0 && !cmd_overflow) {
        cmd[cmd_len] = '\0';
        runCommand(cmd);
      } else if (cmd_overflow) {
        Serial.println(F("ERR command too long"));
      }
      cmd_len = 0;
      cmd_overflow = false;
    } else if (cmd_len < sizeof(cmd) - 1) {
      cmd[cmd_len++] = c;
    } else {
      cmd_overflow = true;
    }
  }
}

void printPair(const __FlashStringHelper *label, float value, int decimals) {
  Serial.print(label);
  Serial.print(':');
  Serial.print(value, decimals);
}

void loop() {
  readCommands();
  // Fixed-rate schedule on micros(): no drift from the time spent printing.
  // (Unsigned subtraction keeps working when micros() wraps after ~71 minutes.)
  if ((long)(micros() - next_us) < 0) {
    return;
  }
  next_us += period_us;

  unsigned long t = millis();
  float a0 = analogRead(A0) * (VREF / ADC_MAX);
  float a1 = analogRead(A1) * (VREF / ADC_MAX);
  float a2 = analogRead(A2) * (VREF / ADC_MAX);
  float sine = sin(2.0 * PI * 0.5 * (t / 1000.0));  // 0.5 Hz demo wave: plots with nothing wired

  Serial.print(F("t:"));
  Serial.print(t);  // an integer: no decimals
  Serial.print(' ');
  printPair(F("a0"), a0, 3);
  Serial.print(' ');
  printPair(F("a1"), a1, 3);
  Serial.print(' ');
  printPair(F("a2"), a2, 3);
  Serial.print(' ');
  printPair(F("sine"), sine, 3);
  Serial.println();  // CRLF; LF or CR alone work as well
}

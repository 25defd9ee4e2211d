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

const unsigned long PERIOD_US = 10000UL;  // 100 Hz
const float VREF = 5.0;                   // 3.3 on 3.3 V boards
const int ADC_MAX = 1023;                 // 10-bit ADC on AVR boards; 4095 on 12-bit ones

unsigned long next_us;

void setup() {
  Serial.begin(115200);
  // Native-USB boards (Leonardo, Micro, SAMD): wait briefly for the host to open the port,
  // but do not block forever when running standalone.
  unsigned long t0 = millis();
  while (!Serial && millis() - t0 < 2000) {
  }
  // A banner line is fine: sensorstream counts it as malformed and ignores it.
  Serial.println(F("# sensorstream reference sketch, labels format, 100 Hz"));
  next_us = micros();
}

void printPair(const __FlashStringHelper *label, float value, int decimals) {
  Serial.print(label);
  Serial.print(':');
  Serial.print(value, decimals);
}

void loop() {
  // Fixed-rate schedule on micros(): no drift from the time spent printing.
  // (Unsigned subtraction keeps working when micros() wraps after ~71 minutes.)
  if ((long)(micros() - next_us) < 0) {
    return;
  }
  next_us += PERIOD_US;

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

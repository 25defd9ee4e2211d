// Resume by (epoch, seq) across reconnects (docs/protocol.md, "Resume").
//
// Stream keys belong to one connection: a restarted server may hand them out
// differently, so a stream is known here by its id, and where we are in it by
// the epoch and seq of the last batch we drew. On every reconnect the
// dashboard asks the server to resume each stream from there; the answer says
// whether it could (the missing batches follow, flagged as history) or how
// much is lost (the gap is marked on the chart, as for `dropped`).

/** {id: {epoch, seq}} for every stream we hold data of (servers with epochs only). */
export function resumePoints(views) {
  const out = {};
  for (const sv of views) {
    if (sv.lastSeq !== null && sv.seqEpoch) out[sv.id] = { epoch: sv.seqEpoch, seq: sv.lastSeq };
  }
  return out;
}

/** Apply a `subscribed` message's `resumed` answers to the streams (by id). */
export function applyResumed(resumed, byId) {
  if (!resumed || typeof resumed !== "object") return;
  for (const [id, r] of Object.entries(resumed)) {
    const sv = byId.get(id);
    if (!sv || !r || typeof r !== "object") continue;
    sv.resync = false;   // the server said exactly what follows: no guessing from the first batch
    if (r.recovered === true) continue;
    // Not recovered: the stream continues live from now. (An epoch change was
    // already counted when the hello brought the new epoch: noteEpoch.)
    if (sv.lastSeq !== null) sv.outages++;
    sv.pendingGap = true;
    if (Number.isInteger(r.lost) && r.lost > 0) sv.seqLost += r.lost;
    sv.lastSeq = null;   // the next seq does not follow ours
  }
}

/**
 * A stream's info arrived (hello or `stream`): if its epoch is not the one our
 * seqs belong to, the server lost its history and seqs may count afresh.
 * Returns true when that happened (a gap will be marked at the next data).
 */
export function noteEpoch(sv, epoch) {
  if (sv.lastSeq === null || !sv.seqEpoch || epoch === sv.seqEpoch) return false;
  sv.outages++;
  sv.lastSeq = null;
  sv.pendingGap = true;
  return true;
}

/**
 * Scoring of change detectors, pure and separate from them, under the names River's
 * `drift/evaluate.py` and the change-detection literature use. Times are indices in any unit
 * (windows, requests): `alarms` are the times the detector alarmed, `changes` the true change
 * points (sorted), `length` the length of the stream.
 *
 * An alarm at or after change j and before change j+1 (and within maxDelay when given) detects
 * change j if it is the first such alarm; any other alarm is a false alarm.
 */
export interface DetectionScore {
  /** delay of the first alarm after each change (null: missed) */
  detectionDelay: (number | null)[];
  falseAlarms: number;
  /** false alarms per unit of time spent with no change pending */
  falseAlarmRate: number;
  /** mean time between false alarms (Infinity when there is none) */
  meanTimeBetweenFalseAlarms: number;
  missedDetections: number;
}

export function scoreDetections(alarms: number[], changes: number[], length: number, maxDelay = Infinity): DetectionScore {
  const a = [...alarms].sort((x, y) => x - y);
  const c = [...changes].sort((x, y) => x - y);
  const detectionDelay: (number | null)[] = c.map(() => null);
  let falseAlarms = 0;
  for (const t of a) {
    // the latest change at or before t
    let j = -1;
    for (let i = 0; i < c.length && c[i] <= t; i++) j = i;
    if (j >= 0 && detectionDelay[j] === null && t - c[j] <= maxDelay) detectionDelay[j] = t - c[j];
    else if (j < 0 || t - c[j] > maxDelay || detectionDelay[j] !== null) {
      // before any change, too late, or a repeat after the detection: counted as false only when
      // no change is pending (repeats while the change persists are the same episode)
      if (j < 0) falseAlarms++;
    }
  }
  const quiet = c.length ? c[0] : length;
  return {
    detectionDelay,
    falseAlarms,
    falseAlarmRate: quiet > 0 ? falseAlarms / quiet : 0,
    meanTimeBetweenFalseAlarms: falseAlarms > 0 ? quiet / falseAlarms : Infinity,
    missedDetections: detectionDelay.filter((d) => d === null).length,
  };
}

export const detectionDelay = (alarms: number[], changes: number[], length: number, maxDelay = Infinity) =>
  scoreDetections(alarms, changes, length, maxDelay).detectionDelay;
export const falseAlarmRate = (alarms: number[], changes: number[], length: number) => scoreDetections(alarms, changes, length).falseAlarmRate;
export const meanTimeBetweenFalseAlarms = (alarms: number[], changes: number[], length: number) =>
  scoreDetections(alarms, changes, length).meanTimeBetweenFalseAlarms;
export const missedDetections = (alarms: number[], changes: number[], length: number, maxDelay = Infinity) =>
  scoreDetections(alarms, changes, length, maxDelay).missedDetections;

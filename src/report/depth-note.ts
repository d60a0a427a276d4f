/**
 * The sentence under a depth table when production reaches turns no eval case is at. Only the eval
 * cases that give a depth (`turn` or `turns`) form the eval set's depth profile, so the sentence
 * says so: an eval set of plain questions with a few follow-ups is not "untested at turn 1".
 */
export function untestedDepthNote(rows: readonly { band: string; requests: number; share: number; evalShare: number | null }[], evalCases: number): string | null {
  const untested = rows.filter((r) => r.evalShare === 0 && r.requests > 0);
  if (!untested.length) return null;
  const share = untested.reduce((a, r) => a + r.share, 0);
  return (
    `No eval case that gives its depth (${evalCases} give \`turn\` or \`turns\`; cases without either are not counted) is at turn ${untested.map((r) => r.band).join(', ')}: ` +
    `${(100 * share).toFixed(1)}% of production traffic is there.`
  );
}

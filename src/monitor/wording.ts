/** Wording shared by the rule families' findings (pure). */

/** a share as a percentage with one decimal */
export const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** who a finding is about: '*' = all agents together, '' = traffic with no agent */
export const scopeName = (agent: string) => (agent === '*' ? 'all agents' : agent === '' ? 'traffic with no agent' : `agent "${agent}"`);

/** log(1/0.025): the level of the two-sided 95% intervals the findings report (klInterval) */
export const CI_LEVEL = Math.log(1 / 0.025);

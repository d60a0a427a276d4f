/** Conversation depth and tool chains in the eval set: parsing, the profile, the chain verdict, agent.json by value. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { agentProfile, chainBigrams, chainVerdict, depthBand, loadAgentProfile, saveAgentFile, AgentProfileError } from '../../src/coverage/agent.js';
import { parseEvalSet } from '../../src/coverage/evalset.js';

describe('eval cases with depth and tools', () => {
  it('reads turn, turns and tools from JSONL and CSV', () => {
    const jsonl = [
      { id: 'a', query: 'q1', turn: 3, tools: ['lookup', 'refund'] },
      { id: 'b', query: 'q2', turns: ['hi', 'my card'], tools: 'lookup; block_card' },
      { id: 'c', query: 'q3' },
      { id: 'd', query: 'q4', turn: 0 },
      { id: 'e', query: 'q5', tools: [42] },
    ].map((o) => JSON.stringify(o)).join('\n');
    const r = parseEvalSet(jsonl, 'jsonl');
    expect(r.cases.map((c) => [c.id, c.turn, c.tools])).toEqual([['a', 3, ['lookup', 'refund']], ['b', 3, ['lookup', 'block_card']], ['c', undefined, undefined]]);
    expect(r.errors.map((e) => e.line)).toEqual([4, 5]);
    const csv = parseEvalSet('id,query,turn,tools\nx,hello,2,a→b→c\ny,bye,,\n', 'csv');
    expect(csv.cases.map((c) => [c.id, c.turn, c.tools])).toEqual([['x', 2, ['a', 'b', 'c']], ['y', undefined, undefined]]);
  });
});

describe('agent profile', () => {
  const cases = [
    { cluster: 0, turn: 1, tools: ['lookup'] },
    { cluster: 0, turn: 2, tools: ['lookup', 'refund'] },
    { cluster: 0, turn: 1, tools: ['lookup', 'refund'] },
    { cluster: 1, turn: 5, tools: ['search_kb', 'create_ticket'] },
    { cluster: 1 },
  ];

  it('counts depth bands and distinct chains per cluster', () => {
    expect([1, 2, 3, 4, 7, 8, 40].map(depthBand)).toEqual([0, 1, 1, 2, 2, 3, 3]);
    const p = agentProfile('v1', cases)!;
    expect(p.depth).toEqual({ cases: 4, shares: [0.5, 0.25, 0.25, 0], maxTurn: 5 });
    expect(p.tools.cases).toBe(4);
    expect(p.tools.chains).toEqual([
      { cluster: 0, tools: ['lookup'], cases: 1 },
      { cluster: 0, tools: ['lookup', 'refund'], cases: 2 },
      { cluster: 1, tools: ['search_kb', 'create_ticket'], cases: 1 },
    ]);
    expect(agentProfile('v1', [{ cluster: 0 }])).toBeNull();
  });

  it('judges a production chain exact, relaxed or untested against its cluster', () => {
    const p = agentProfile('v1', cases)!;
    expect(chainBigrams(['a', 'b'])).toEqual(['^→a', 'a→b', 'b→$']);
    expect(chainVerdict(p, 0, [])).toEqual({ verdict: 'none' });
    expect(chainVerdict(p, 0, ['lookup', 'refund'])).toEqual({ verdict: 'exact' });
    // every step is one some case of the cluster takes, but no case takes them all in this order
    expect(chainVerdict(p, 0, ['lookup', 'refund', 'lookup', 'refund'])).toEqual({ verdict: 'untested', missing: 'refund→lookup' });
    expect(chainVerdict(p, 1, ['search_kb', 'create_ticket'])).toEqual({ verdict: 'exact' });
    expect(chainVerdict(p, 1, ['lookup'])).toEqual({ verdict: 'untested', missing: '^→lookup' });
    const q = agentProfile('v1', [...cases, { cluster: 0, tools: ['refund'] }])!;
    expect(chainVerdict(q, 0, ['refund', 'lookup', 'refund'])).toEqual({ verdict: 'untested', missing: 'refund→lookup' });
    expect(chainVerdict(agentProfile('v1', [{ cluster: 0, tools: ['a', 'b'] }, { cluster: 0, tools: ['b', 'a'] }])!, 0, ['a', 'b', 'a'])).toEqual({ verdict: 'relaxed' });
  });

  it('reads agent.json back only when it is valid and belongs to the model', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-agent-'));
    const model = { manifest: { version: 'v1' }, cases: [{ id: 'a' }, { id: 'b' }], labels: new Int32Array([1, 0]) };
    expect(loadAgentProfile(dir, model)).toBeNull();
    expect(saveAgentFile(dir, 'v1', [{ id: 'a', turn: 2, tools: ['x'] }, { id: 'b' }])).toBe(true);
    expect(loadAgentProfile(dir, model)!.tools.chains).toEqual([{ cluster: 1, tools: ['x'], cases: 1 }]);
    expect(() => loadAgentProfile(dir, { ...model, manifest: { version: 'v2' } })).toThrow(/belongs to model v1/);
    expect(() => loadAgentProfile(dir, { ...model, cases: [{ id: 'b' }] })).toThrow(AgentProfileError);
    fs.writeFileSync(path.join(dir, 'agent.json'), JSON.stringify({ format: 'evalgap-agent-profile', formatVersion: 1, modelVersion: 'v1', cases: [{ id: 'a', turn: -3 }] }));
    expect(() => loadAgentProfile(dir, model)).toThrow(/not a valid agent profile/);
    fs.writeFileSync(path.join(dir, 'agent.json'), '{"format": "evalgap-agent-profile", ');
    expect(() => loadAgentProfile(dir, model)).toThrow(/not JSON/);
  });
});

/**
 * The audit of the engine's syntax tree (src/store/query-guard.ts), on dumps as `EXPLAIN AST`
 * prints them (copied from the embedded engine; the integration test runs the real parser).
 */
import { describe, expect, it } from 'vitest';
import { auditAst, parseAstDump, QueryRefused } from '../../src/store/query-guard.js';

const SELECT_FROM = (table: string) => `SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
${table}`;

describe('parseAstDump', () => {
  it('builds the tree and checks every declared child count', () => {
    const t = parseAstDump(SELECT_FROM('      TableIdentifier evalgap.requests (alias q)'));
    expect(t.type).toBe('SelectWithUnionQuery');
    const te = t.children[0].children[0].children[1].children[0].children[0];
    expect(te.type).toBe('TableExpression');
    expect(te.children[0]).toEqual({ type: 'TableIdentifier', name: 'evalgap.requests', children: [] });
  });

  it('refuses a dump whose lines do not add up (a forged line, a missing child, a jump in depth)', () => {
    // an identifier holding a line break would print a line of its own
    expect(() => parseAstDump('SelectWithUnionQuery (children 1)\n ExpressionList (children 1)\n  Identifier a\n  Literal 1')).toThrow(QueryRefused);
    expect(() => parseAstDump('SelectWithUnionQuery (children 2)\n ExpressionList')).toThrow(QueryRefused);
    expect(() => parseAstDump('SelectWithUnionQuery (children 1)\n   ExpressionList')).toThrow(QueryRefused);
    expect(() => parseAstDump('SelectWithUnionQuery\n ExpressionList')).toThrow(QueryRefused);
    expect(() => parseAstDump('SelectWithUnionQuery\nSelectWithUnionQuery')).toThrow(QueryRefused);
    expect(() => parseAstDump('c)\n')).toThrow(QueryRefused);
  });
});

describe('auditAst', () => {
  const audit = (dump: string) => auditAst(parseAstDump(dump));

  it('accepts a SELECT over stored tables, with joins, subqueries, lambdas and generator table functions', () => {
    expect(audit(SELECT_FROM('      TableIdentifier evalgap.requests'))).toBeNull();
    expect(audit(SELECT_FROM('      Function numbers (children 1)\n       ExpressionList (children 1)\n        Literal UInt64_10'))).toBeNull();
    expect(
      audit(`SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Function arrayMap (children 1)
     ExpressionList (children 2)
      Function lambda (children 1)
       ExpressionList (children 2)
        Function tuple (children 1)
         ExpressionList (children 1)
          Identifier x
        Identifier x
      Identifier a`),
    ).toBeNull();
  });

  it('refuses INTO OUTFILE (a second child of the statement), FORMAT, SETTINGS', () => {
    expect(
      audit(`SelectWithUnionQuery (children 2)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Literal UInt64_1
 Literal '/tmp/x'`),
    ).toMatch(/INTO OUTFILE/);
    expect(
      audit(`SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Literal UInt64_1
   Set`),
    ).toMatch(/SETTINGS/);
  });

  it('refuses file, network and process table functions, and I/O functions anywhere', () => {
    for (const f of ['file', 'url', 's3', 'remote', 'remoteSecure', 'executable', 'mysql', 'hdfs', 'merge', 'view', 'format']) {
      expect(audit(SELECT_FROM(`      Function ${f} (children 1)\n       ExpressionList (children 1)\n        Literal 'x'`)), f).toMatch(/table function/);
    }
    for (const f of ['file', 'FILE', 'dictGet', 'dictGetString', 'catboostEvaluate', 'hasColumnInTable']) {
      expect(
        audit(`SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Function ${f} (children 1)
     ExpressionList (children 1)
      Literal '/etc/passwd'`),
        f,
      ).toMatch(/reads files/);
    }
  });

  it('refuses statements other than SELECT', () => {
    expect(audit('DropQuery  evalgap.requests')).toMatch(/only SELECT/);
    expect(audit('InsertQuery')).toMatch(/only SELECT/);
    expect(audit('SetQuery')).toMatch(/only SELECT/);
  });
});

describe('limits of read-only SQL (EVALGAP_QUERY_*)', () => {
  it('has defaults, reads the variables, refuses nonsense', async () => {
    const { loadConfig } = await import('../../src/config/index.js');
    const { readOnlySettings } = await import('../../src/store/read-only.js');
    const d = loadConfig({});
    expect(d.query).toEqual({ timeoutSeconds: 30, maxMemoryBytes: 1_073_741_824, maxResultRows: 1_000_000, maxResultBytes: 268_435_456, queue: 4 });
    const c = loadConfig({
      EVALGAP_QUERY_TIMEOUT_SECONDS: '5',
      EVALGAP_QUERY_MAX_MEMORY_BYTES: '100000000',
      EVALGAP_QUERY_MAX_RESULT_ROWS: '7',
      EVALGAP_QUERY_MAX_RESULT_BYTES: '4096',
      EVALGAP_QUERY_QUEUE: '0',
    });
    const s = readOnlySettings(c.query, 'embedded');
    expect(s).toMatchObject({ max_execution_time: 5, max_memory_usage: '100000000', max_result_rows: '7', max_result_bytes: '4096', readonly: '1' });
    // readonly comes last: the embedded engine applies settings in order, and none may follow it
    expect(Object.keys(s).pop()).toBe('readonly');
    expect(readOnlySettings(c.query, 'server')).toMatchObject({ readonly: '2', cancel_http_readonly_queries_on_client_close: 1 });
    expect(() => loadConfig({ EVALGAP_QUERY_TIMEOUT_SECONDS: '0' })).toThrow(/query.timeoutSeconds/);
    expect(() => loadConfig({ EVALGAP_QUERY_QUEUE: '-1' })).toThrow(/query.queue/);
  });
});

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

/**
 * What a read-only query may be, decided by the engine's own parser.
 *
 * `readonly = 1` alone is not enough: ClickHouse (and chdb, the embedded engine) still runs
 * `SELECT … INTO OUTFILE` (it writes any file the process can write) and the scalar `file()`
 * function (it reads any file). So a query from outside (`POST /query`, `evalgap sql`) is checked
 * before it runs:
 *
 * 1. `formatQuerySingleLine({q:String})`, the query bound as a value: the engine parses it as
 *    exactly one statement (it refuses `SELECT 1; SELECT 2`) and prints its canonical form. Only that
 *    canonical text is used from here on, so what runs is what was checked.
 * 2. `EXPLAIN AST <canonical>`: the engine's syntax tree, audited by `auditAst` against an
 *    allow-list: a SELECT (WITH, UNION, INTERSECT, EXCEPT, joins, subqueries) and nothing else;
 *    no INTO OUTFILE, FORMAT or SETTINGS clause; table functions only from a short list of ones
 *    that touch neither files nor the network; no function that reads files, dictionaries, models
 *    or other hosts anywhere.
 *
 * The parsing and the audit of the tree are pure (`parseAstDump`, `auditAst`); `checkReadOnly`
 * asks the engine.
 */
import type { ClickHouseClient } from '@clickhouse/client';

export class QueryRefused extends Error {
  constructor(why: string) {
    super(`refused: ${why}`);
    this.name = 'QueryRefused';
  }
}

export interface AstNode {
  type: string;
  /** what follows the type on its line (function or table name, literal), without alias and count */
  name: string;
  children: AstNode[];
}

/** Node types a read-only SELECT is made of (as `EXPLAIN AST` prints them). */
const NODE_TYPES = new Set([
  'SelectWithUnionQuery',
  'SelectIntersectExceptQuery',
  'SelectQuery',
  'ExpressionList',
  'Identifier',
  'Literal',
  'Function',
  'QueryParameter',
  'Asterisk',
  'QualifiedAsterisk',
  'ColumnsRegexpMatcher',
  'ColumnsListMatcher',
  'QualifiedColumnsRegexpMatcher',
  'QualifiedColumnsListMatcher',
  'ColumnsTransformerList',
  'ColumnsExceptTransformer',
  'ColumnsReplaceTransformer',
  'ColumnsReplaceTransformer::Replacement',
  'ColumnsApplyTransformer',
  'TablesInSelectQuery',
  'TablesInSelectQueryElement',
  'TableExpression',
  'TableIdentifier',
  'TableJoin',
  'ArrayJoin',
  'Subquery',
  'WithElement',
  'OrderByElement',
  'InterpolateElement',
  'WindowDefinition',
  'WindowListElement',
  'SampleRatio',
]);

/** Table functions that generate rows and touch neither files nor the network. */
export const TABLE_FUNCTIONS = new Set(['numbers', 'numbers_mt', 'zeros', 'zeros_mt', 'values', 'generateSeries', 'generate_series']);

/**
 * Functions refused wherever they appear (lower case): they read or write files, the network,
 * dictionaries (whose sources are files, URLs or other servers), models, or machine code.
 * Table functions outside TABLE_FUNCTIONS are refused anyway; the I/O ones are listed here too so
 * that a scalar of the same name cannot slip through.
 */
const IO_FUNCTIONS = new Set(
  [
    'file', 'fileCluster', 'url', 'urlCluster', 's3', 's3Cluster', 'gcs', 'oss', 'cosn', 'hdfs', 'hdfsCluster',
    'azureBlobStorage', 'azureBlobStorageCluster', 'remote', 'remoteSecure', 'cluster', 'clusterAllReplicas',
    'mysql', 'postgresql', 'sqlite', 'mongodb', 'redis', 'jdbc', 'odbc', 'executable', 'input',
    'iceberg', 'icebergS3', 'icebergAzure', 'icebergHDFS', 'icebergLocal', 'deltaLake', 'deltaLakeLocal', 'hudi',
    'dictionary', 'ytsaurus', 'arrowFlight', 'hasColumnInTable', 'catboostEvaluate', 'modelEvaluate',
    'naiveBayesClassifier', 'getClientHTTPHeader', 'addressToLine', 'addressToLineWithInlines', 'addressToSymbol',
    'demangle',
  ].map((s) => s.toLowerCase()),
);

/** Parse the text `EXPLAIN AST` prints (one node a line, one space of indent per level). */
export function parseAstDump(text: string): AstNode {
  const lines = text.replace(/\n+$/, '').split('\n');
  type Open = { node: AstNode; depth: number; declared: number };
  const stack: Open[] = [];
  let root: AstNode | null = null;
  const close = (o: Open) => {
    if (o.node.children.length !== o.declared) throw new QueryRefused('the engine returned a syntax tree this check cannot read');
  };
  for (const line of lines) {
    const m = /^( *)([A-Z][A-Za-z0-9_:]*)(.*)$/.exec(line);
    if (!m) throw new QueryRefused('the engine returned a syntax tree this check cannot read');
    const depth = m[1].length;
    let rest = m[3];
    let declared = 0;
    const c = / \(children (\d+)\)$/.exec(rest);
    if (c) {
      declared = Number(c[1]);
      if (declared < 1) throw new QueryRefused('the engine returned a syntax tree this check cannot read');
      rest = rest.slice(0, c.index);
    }
    const a = / \(alias .*\)$/.exec(rest);
    if (a) rest = rest.slice(0, a.index);
    const node: AstNode = { type: m[2], name: rest.trim(), children: [] };
    while (stack.length && stack[stack.length - 1].depth >= depth) close(stack.pop()!);
    if (!stack.length) {
      if (root || depth !== 0) throw new QueryRefused('the engine returned a syntax tree this check cannot read');
      root = node;
    } else {
      const parent = stack[stack.length - 1];
      if (depth !== parent.depth + 1) throw new QueryRefused('the engine returned a syntax tree this check cannot read');
      parent.node.children.push(node);
    }
    stack.push({ node, depth, declared });
  }
  while (stack.length) close(stack.pop()!);
  if (!root) throw new QueryRefused('empty query');
  return root;
}

/** Why the tree is not one read-only SELECT, or null when it is. */
export function auditAst(root: AstNode): string | null {
  if (root.type !== 'SelectWithUnionQuery') return `only SELECT (or WITH … SELECT) queries are accepted, not ${root.type.replace(/Query$/, '')}`;
  const visit = (n: AstNode, parent: AstNode | null): string | null => {
    if (!NODE_TYPES.has(n.type)) {
      return n.type === 'Set' ? 'a SETTINGS clause is not accepted (the limits are fixed by evalgap)' : `${n.type} is not accepted in a read-only query`;
    }
    if (n.type === 'SelectWithUnionQuery' && (n.children.length !== 1 || n.children[0].type !== 'ExpressionList')) {
      return 'INTO OUTFILE, FORMAT and SETTINGS clauses are not accepted';
    }
    if (n.type === 'Function') {
      const name = n.name.split(' ')[0];
      if (parent?.type === 'TableExpression') {
        // a qualified name (db.view) is a parameterized view, read like any view; real table functions have no database
        if (!TABLE_FUNCTIONS.has(name) && !/^[A-Za-z_][\w]*\.[A-Za-z_][\w]*$/.test(name)) {
          return `the table function ${name}() is not accepted (allowed: ${[...TABLE_FUNCTIONS].join(', ')}, and parameterized views as database.view(…))`;
        }
      } else if (IO_FUNCTIONS.has(name.toLowerCase()) || name.toLowerCase().startsWith('dict')) {
        return `the function ${name}() is not accepted: it reads files, dictionaries, models or other hosts`;
      }
    }
    for (const c of n.children) {
      const r = visit(c, n);
      if (r) return r;
    }
    return null;
  };
  return visit(root, null);
}

/**
 * The canonical single-line text of `sql`, or QueryRefused. The checks only parse (nothing of
 * `sql` runs), so `client` needs no limits: the result limits would cut a long syntax tree.
 */
export async function checkReadOnly(client: ClickHouseClient, sql: string, params: Record<string, unknown>): Promise<string> {
  let canonical: string;
  try {
    const rs = await client.query({ query: 'SELECT formatQuerySingleLine({q:String}) AS q', query_params: { q: sql }, format: 'JSONEachRow' });
    canonical = (await rs.json<{ q: string }>())[0].q;
  } catch (e) {
    throw new QueryRefused(engineMessage(e));
  }
  // only a SELECT is ever explained (EXPLAIN of other statements parses only, too, but need not be asked)
  const head = /^\(*\s*(\w+)/.exec(canonical)?.[1] ?? '';
  if (!/^(SELECT|WITH)$/i.test(head)) throw new QueryRefused(`only SELECT (or WITH … SELECT) queries are accepted, not ${head || 'this statement'}`);
  // identifiers print unescaped in the syntax tree: one holding a line break could forge nodes
  if (/`[^`]*\\[nr0]/.test(canonical) || /[\u0000-\u001f]/.test(canonical)) {
    throw new QueryRefused('identifiers with control characters are not accepted');
  }
  let dump: string;
  try {
    // exec: the statement as it is (query() would append a FORMAT clause, which EXPLAIN would
    // attribute to the query explained); the result format is asked for with default_format
    const r = await client.exec({ query: `EXPLAIN AST ${canonical}`, query_params: params, clickhouse_settings: { default_format: 'JSONEachRow' } });
    let text = '';
    for await (const c of r.stream) text += (c as Buffer).toString('utf8');
    dump = text
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => (JSON.parse(l) as { explain: string }).explain)
      .join('\n');
  } catch (e) {
    throw new QueryRefused(engineMessage(e));
  }
  const tree = parseAstDump(dump);
  const why = auditAst(tree);
  if (why) throw new QueryRefused(why);
  return canonical;
}

/** The engine's error without the query echoed back. */
function engineMessage(e: unknown): string {
  const m = String((e as Error)?.message ?? e).split('\n')[0];
  return m.replace(/: In scope SELECT formatQuerySingleLine\(.*$/s, '');
}

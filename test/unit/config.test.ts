import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import { ConfigError, PACKAGE_ROOT, VARIABLE_OF, loadConfig, maskUrl, redactConfig } from '../../src/config/index.js';
import { tlsOptions } from '../../src/store/client.js';

describe('loadConfig', () => {
  it('uses documented defaults for an empty environment', () => {
    const c = loadConfig({});
    expect(c.kafka).toEqual({
      brokers: ['127.0.0.1:9092'],
      clientId: 'evalgap',
      topic: 'evalgap.requests',
      dlqTopic: 'evalgap.requests.dlq',
      group: 'evalgap',
      ssl: false,
    });
    expect(c.clickhouse).toEqual({
      url: undefined,
      path: path.join(PACKAGE_ROOT, '.evalgap', 'chdb'),
      database: 'evalgap',
      username: 'default',
      password: '',
      retentionDays: 90,
    });
    expect(c.embed).toEqual({
      modelsDir: path.join(PACKAGE_ROOT, 'models'),
      model: 'all-MiniLM-L6-v2',
      precision: 'int8',
      batchSize: 8,
      threads: 0,
      maxTokens: 256,
    });
    expect(c.ingest).toEqual({
      redactText: false,
      metricsPort: 9464,
      maxBatchMessages: 2000,
      maxMessageBytes: 1_048_576,
      maxDepth: 32,
      maxFutureHours: 24,
      stallSeconds: 120,
      lagIntervalSeconds: 10,
      sessionTimeoutMs: 30_000,
    });
    expect(c.logLevel).toBe('info');
  });

  it('PACKAGE_ROOT is the folder holding package.json', () => {
    expect(path.resolve(PACKAGE_ROOT)).toBe(path.resolve(new URL('../..', import.meta.url).pathname));
  });

  it('applies environment overrides and coerces numbers and booleans', () => {
    const c = loadConfig({
      EVALGAP_KAFKA_BROKERS: ' a:1, b.example:9093 ,',
      EVALGAP_KAFKA_CLIENT_ID: 'cid',
      EVALGAP_TOPIC: 't',
      EVALGAP_DLQ_TOPIC: 't.dlq',
      EVALGAP_GROUP: 'g',
      EVALGAP_CLICKHOUSE_URL: 'http://ch:8123',
      EVALGAP_DATA_DIR: '/tmp/data',
      EVALGAP_CLICKHOUSE_DATABASE: 'db_2',
      EVALGAP_CLICKHOUSE_USER: 'u',
      EVALGAP_CLICKHOUSE_PASSWORD: 's3cret',
      EVALGAP_RETENTION_DAYS: '7',
      EVALGAP_MODELS_DIR: '/m',
      EVALGAP_EMBED_MODEL: 'other',
      EVALGAP_EMBED_BATCH: '64',
      EVALGAP_EMBED_THREADS: '2',
      EVALGAP_EMBED_PRECISION: 'fp32',
      EVALGAP_EMBED_MAX_TOKENS: '128',
      EVALGAP_REDACT_TEXT: 'yes',
      EVALGAP_REDACT_KEY: 'k'.repeat(32),
      EVALGAP_METRICS_PORT: '0',
      EVALGAP_MAX_BATCH: '10',
      EVALGAP_LOG_LEVEL: 'debug',
    });
    expect(c.kafka).toEqual({ brokers: ['a:1', 'b.example:9093'], clientId: 'cid', topic: 't', dlqTopic: 't.dlq', group: 'g', ssl: false });
    expect(c.clickhouse).toEqual({
      url: 'http://ch:8123',
      path: '/tmp/data',
      database: 'db_2',
      username: 'u',
      password: 's3cret',
      retentionDays: 7,
    });
    expect(c.embed).toEqual({ modelsDir: '/m', model: 'other', precision: 'fp32', batchSize: 64, threads: 2, maxTokens: 128 });
    expect(c.ingest).toMatchObject({ redactText: true, redactKey: 'k'.repeat(32), metricsPort: 0, maxBatchMessages: 10 });
    expect(c.logLevel).toBe('debug');
  });

  it.each([
    ['1', true],
    ['true', true],
    ['yes', true],
    ['0', false],
    ['false', false],
    ['no', false],
    ['', false], // empty = unset = default false
  ])('EVALGAP_REDACT_TEXT=%j → %s', (v, expected) => {
    expect(loadConfig({ EVALGAP_REDACT_TEXT: v, EVALGAP_REDACT_KEY: 'k'.repeat(32) }).ingest.redactText).toBe(expected);
  });

  it.each([
    ['TRUE', true],
    [' On ', true],
    ['off', false],
    ['No', false],
  ])('EVALGAP_KAFKA_SSL=%j → %s (any case, blanks trimmed)', (v, expected) => {
    expect(loadConfig({ EVALGAP_KAFKA_SSL: v }).kafka.ssl).toBe(expected);
  });

  it('refuses a boolean or a whole number it would have to guess, naming what it takes', () => {
    expect(() => loadConfig({ EVALGAP_KAFKA_SSL: 'maybe' })).toThrow(/kafka\.ssl: expected one of true, false, 1, 0, yes, no, on, off/);
    // z.coerce.number read a blank as 0 (one thread per core) and hex as a number
    for (const v of [' ', '0x10', '1e3', '8.5', 'eight']) {
      expect(() => loadConfig({ EVALGAP_EMBED_BATCH: v }), v).toThrow(/embed\.batchSize: expected a whole number in decimal digits/);
    }
    expect(() => loadConfig({ EVALGAP_EMBED_THREADS: ' ' })).toThrow(/embed\.threads: expected a whole number/);
    expect(loadConfig({ EVALGAP_EMBED_BATCH: ' 16 ' }).embed.batchSize).toBe(16);
    expect(() => loadConfig({ EVALGAP_RETENTION_DAYS: '0' })).toThrow(/retentionDays: Number must be greater than or equal to 1/);
    // a value read from a _FILE variable: the error names that variable, not the plain one (which is not set)
    const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-cfg-')), 'days');
    fs.writeFileSync(f, 'abc\n');
    expect(() => loadConfig({ EVALGAP_RETENTION_DAYS_FILE: f })).toThrow(/retentionDays: expected a whole number in decimal digits \(set by EVALGAP_RETENTION_DAYS_FILE, or/);
  });

  it('treats empty-string variables as unset', () => {
    const c = loadConfig({ EVALGAP_TOPIC: '', EVALGAP_EMBED_BATCH: '' });
    expect(c.kafka.topic).toBe('evalgap.requests');
    expect(c.embed.batchSize).toBe(8);
  });

  it('applies overrides over the environment (deep merge)', () => {
    const c = loadConfig(
      { EVALGAP_TOPIC: 'from-env', EVALGAP_GROUP: 'g-env', EVALGAP_REDACT_KEY: 'k'.repeat(32) },
      { kafka: { topic: 'from-flag', brokers: ['x:1', 'y:2'] }, ingest: { redactText: true } },
    );
    expect(c.kafka.topic).toBe('from-flag');
    expect(c.kafka.group).toBe('g-env');
    expect(c.kafka.brokers).toEqual(['x:1', 'y:2']);
    expect(c.ingest.redactText).toBe(true);
    expect(c.ingest.metricsPort).toBe(9464);
  });

  it('ignores undefined override values', () => {
    const c = loadConfig({ EVALGAP_TOPIC: 'env' }, { kafka: { topic: undefined } });
    expect(c.kafka.topic).toBe('env');
  });

  it('rejects an invalid broker string with a path-qualified message', () => {
    let err: unknown;
    try {
      loadConfig({ EVALGAP_KAFKA_BROKERS: 'localhost' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const ce = err as ConfigError;
    expect(ce.name).toBe('ConfigError');
    expect(ce.message).toMatch(/^invalid configuration:\n/);
    expect(ce.message).toContain('kafka.brokers.0: expected host:port');
    expect(ce.zodError.issues[0].path).toEqual(['kafka', 'brokers', 0]);
  });

  it('rejects a broker list that is only separators', () => {
    expect(() => loadConfig({ EVALGAP_KAFKA_BROKERS: ' , ,' })).toThrow(/kafka\.brokers/);
  });

  it('rejects a port with too many digits and a host with spaces', () => {
    expect(() => loadConfig({ EVALGAP_KAFKA_BROKERS: 'h:123456' })).toThrow(ConfigError);
    expect(() => loadConfig({}, { kafka: { brokers: ['bad host:1'] } })).toThrow(/expected host:port/);
  });

  it('rejects out-of-range and non-numeric integers', () => {
    expect(() => loadConfig({ EVALGAP_EMBED_BATCH: '0' })).toThrow(/embed\.batchSize/);
    expect(() => loadConfig({ EVALGAP_EMBED_BATCH: 'abc' })).toThrow(/embed\.batchSize/);
    expect(() => loadConfig({ EVALGAP_METRICS_PORT: '70000' })).toThrow(/ingest\.metricsPort/);
    expect(() => loadConfig({ EVALGAP_EMBED_MAX_TOKENS: '4' })).toThrow(/embed\.maxTokens/);
    expect(() => loadConfig({ EVALGAP_RETENTION_DAYS: '1.5' })).toThrow(/clickhouse\.retentionDays/);
  });

  it('rejects a non-identifier database, a bad URL, an unknown log level and a bad boolean', () => {
    expect(() => loadConfig({ EVALGAP_CLICKHOUSE_DATABASE: 'evil; DROP' })).toThrow(/clickhouse\.database: a plain identifier/);
    expect(() => loadConfig({ EVALGAP_CLICKHOUSE_URL: 'not a url' })).toThrow(/clickhouse\.url/);
    expect(() => loadConfig({ EVALGAP_LOG_LEVEL: 'verbose' })).toThrow(/logLevel/);
    expect(() => loadConfig({ EVALGAP_REDACT_TEXT: 'maybe' })).toThrow(/ingest\.redactText/);
  });

  it('lists every invalid setting in one error', () => {
    try {
      loadConfig({ EVALGAP_KAFKA_BROKERS: 'nope', EVALGAP_LOG_LEVEL: 'loud' });
      expect.unreachable();
    } catch (e) {
      const msg = (e as Error).message;
      expect(msg).toContain('kafka.brokers');
      expect(msg).toContain('logLevel');
      expect((e as ConfigError).zodError.issues.length).toBeGreaterThanOrEqual(2);
    }
  });
});

describe('redactConfig', () => {
  it('replaces a set password and leaves the original untouched', () => {
    const c = loadConfig({ EVALGAP_CLICKHOUSE_PASSWORD: 'hunter2' });
    const r = redactConfig(c);
    expect(r.clickhouse.password).toBe('[redacted]');
    expect(JSON.stringify(r)).not.toContain('hunter2');
    expect(c.clickhouse.password).toBe('hunter2');
    expect(r.clickhouse.username).toBe(c.clickhouse.username);
    expect(r.kafka).toEqual(c.kafka);
  });

  it('keeps an empty password empty', () => {
    expect(redactConfig(loadConfig({})).clickhouse.password).toBe('');
  });
});

describe('issue 8: secrets, schemes, ports, files', () => {
  it('masks credentials inside the ClickHouse URL wherever the config is printed', () => {
    const c = loadConfig({ EVALGAP_CLICKHOUSE_URL: 'https://admin:hunter2@ch.example:8443/' });
    const printed = JSON.stringify(redactConfig(c));
    expect(printed).not.toContain('hunter2');
    expect(printed).not.toContain('admin');
    expect(redactConfig(c).clickhouse.url).toBe('https://***:***@ch.example:8443/');
    expect(maskUrl('http://u:p@h:1/')).toBe('http://***:***@h:1/');
    expect(maskUrl('not a url')).toBe('[unparseable URL]');
  });

  it('rejects non-http ClickHouse URLs and out-of-range ports with one clear line each', () => {
    expect(() => loadConfig({ EVALGAP_CLICKHOUSE_URL: 'ftp://ch:21' })).toThrow(/clickhouse.url: expected an http:\/\/ or https:\/\/ URL/);
    expect(() => loadConfig({ EVALGAP_KAFKA_BROKERS: '127.0.0.1:99999' })).toThrow(/kafka.brokers.0: port must be 1-65535/);
    expect(() => loadConfig({ EVALGAP_KAFKA_BROKERS: '127.0.0.1:0' })).toThrow(/port must be 1-65535/);
  });

  it('requires a key of at least 32 characters for --redact-text, from the environment or a file', () => {
    expect(() => loadConfig({ EVALGAP_REDACT_TEXT: '1' })).toThrow(/needs a key: set EVALGAP_REDACT_KEY or EVALGAP_REDACT_KEY_FILE/);
    expect(() => loadConfig({ EVALGAP_REDACT_TEXT: '1', EVALGAP_REDACT_KEY: 'short' })).toThrow(/at least 32/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-cfg-'));
    const f = path.join(dir, 'key');
    fs.writeFileSync(f, 'z'.repeat(40) + '\n');
    const c = loadConfig({ EVALGAP_REDACT_TEXT: '1', EVALGAP_REDACT_KEY_FILE: f });
    expect(c.ingest.redactKey).toBe('z'.repeat(40));
    expect(JSON.stringify(redactConfig(c))).not.toContain('zzzz');
    expect(() => loadConfig({ EVALGAP_REDACT_KEY_FILE: path.join(dir, 'missing') })).toThrow(/EVALGAP_REDACT_KEY_FILE: cannot read .*ENOENT/);
  });

  it('reads the ClickHouse password and TLS files, and Kafka SASL/SSL settings', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-cfg-'));
    const w = (n: string, v: string) => {
      fs.writeFileSync(path.join(dir, n), v);
      return path.join(dir, n);
    };
    const c = loadConfig({
      EVALGAP_CLICKHOUSE_URL: 'https://ch:8443',
      EVALGAP_CLICKHOUSE_PASSWORD_FILE: w('pw', 'from-file\n'),
      EVALGAP_CLICKHOUSE_CA_FILE: w('ca.pem', 'CA'),
      EVALGAP_KAFKA_SSL: '1',
      EVALGAP_KAFKA_SSL_CA_FILE: w('kca.pem', 'KCA'),
      EVALGAP_KAFKA_SASL_USERNAME: 'svc',
      EVALGAP_KAFKA_SASL_PASSWORD_FILE: w('kpw', 'kafka-secret'),
    });
    expect(c.clickhouse.password).toBe('from-file');
    expect(c.clickhouse.caCert).toBe('CA');
    expect(c.kafka).toMatchObject({ ssl: true, sslCa: 'KCA', sasl: { mechanism: 'scram-sha-512', username: 'svc', password: 'kafka-secret' } });
    const printed = JSON.stringify(redactConfig(c));
    expect(printed).not.toContain('from-file');
    expect(printed).not.toContain('kafka-secret');
  });

  it('names the variable behind every setting in its errors, and the table of variables matches what loadConfig reads', () => {
    expect(() => loadConfig({ EVALGAP_RETENTION_DAYS: '1.5' })).toThrow(/clickhouse\.retentionDays: .* \(set by EVALGAP_RETENTION_DAYS, or the command's flag for it\)/);
    expect(() => loadConfig({ EVALGAP_KAFKA_BROKERS: '127.0.0.1:99999' })).toThrow(/kafka\.brokers\.0: port must be 1-65535 \(set by EVALGAP_KAFKA_BROKERS/);
    // a broker without a port is one mistake, said once
    expect(() => loadConfig({ EVALGAP_KAFKA_BROKERS: 'nohost' })).toThrow(/^invalid configuration:\n  - kafka\.brokers\.0: expected host:port \(set by EVALGAP_KAFKA_BROKERS, or the command's flag for it\)$/);
    // every entry: a probe value either lands at the entry's path or is refused with the variable named
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-cfg-'));
    const probe = path.join(dir, 'probe.pem');
    fs.writeFileSync(probe, 'probe-value');
    const at = (c: unknown, p: string) => p.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], c);
    for (const [p, v] of Object.entries(VARIABLE_OF)) {
      const env: Record<string, string> = { [v]: v.endsWith('_FILE') ? probe : 'probe-value' };
      // the SASL settings only exist with a user; TLS files with TLS on
      if (v.includes('SASL') && !v.endsWith('USERNAME')) env.EVALGAP_KAFKA_SASL_USERNAME = 'u';
      let landed: unknown;
      try {
        landed = at(loadConfig(env), p);
      } catch (e) {
        expect((e as Error).message, `${p} ← ${v}`).toContain(v);
        continue;
      }
      expect(landed, `${p} ← ${v}`).toBe('probe-value');
    }
    // and loadConfig reads every setting through the table (v('path'), pem('path') for a file's
    // content: exactly the _FILE variables), every entry of it, and no variable by name
    const src = fs.readFileSync(path.join(PACKAGE_ROOT, 'src', 'config', 'index.ts'), 'utf8');
    const body = src.slice(src.indexOf('export function loadConfig('), src.indexOf('const merged = deepMerge'));
    const read = [...body.matchAll(/\b(v|pem)\('([\w.]+)'\)/g)];
    expect(new Set(read.map((m) => m[2]))).toEqual(new Set(Object.keys(VARIABLE_OF)));
    for (const [, how, p] of read) expect(how === 'pem', p).toBe(VARIABLE_OF[p].endsWith('_FILE'));
    expect(body.match(/'EVALGAP_\w+'/g) ?? []).toEqual([]);
  });

  it('refuses TLS files that would change nothing: a Kafka CA without TLS, a certificate without its key, TLS files without an https server', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-cfg-'));
    const w = (n: string, v: string) => {
      fs.writeFileSync(path.join(dir, n), v);
      return path.join(dir, n);
    };
    expect(() => loadConfig({ EVALGAP_KAFKA_SSL_CA_FILE: w('kca.pem', 'KCA') })).toThrow(/kafka\.sslCa: EVALGAP_KAFKA_SSL_CA_FILE is set but TLS to the brokers is off/);
    expect(loadConfig({ EVALGAP_KAFKA_SSL: 'true', EVALGAP_KAFKA_SSL_CA_FILE: w('kca.pem', 'KCA') }).kafka.sslCa).toBe('KCA');
    const url = { EVALGAP_CLICKHOUSE_URL: 'https://ch:8443' };
    expect(() => loadConfig({ ...url, EVALGAP_CLICKHOUSE_CERT_FILE: w('c.pem', 'C') })).toThrow(/clickhouse\.cert: a client certificate needs its key/);
    expect(() => loadConfig({ ...url, EVALGAP_CLICKHOUSE_KEY_FILE: w('k.pem', 'K') })).toThrow(/a client certificate needs its key/);
    expect(() => loadConfig({ EVALGAP_CLICKHOUSE_CA_FILE: w('ca.pem', 'CA') })).toThrow(/need an https:\/\/ EVALGAP_CLICKHOUSE_URL/);
    expect(() => loadConfig({ EVALGAP_CLICKHOUSE_URL: 'http://ch:8123', EVALGAP_CLICKHOUSE_CA_FILE: w('ca.pem', 'CA') })).toThrow(/need an https:\/\//);
    // a client certificate with the public CAs (no CA file) is accepted: the client then checks the server against Node's root CAs
    const c = loadConfig({ ...url, EVALGAP_CLICKHOUSE_CERT_FILE: w('c.pem', 'C'), EVALGAP_CLICKHOUSE_KEY_FILE: w('k.pem', 'K') });
    expect(c.clickhouse).toMatchObject({ cert: 'C', key: 'K' });
    expect(c.clickhouse.caCert).toBeUndefined();
    // and the client gets them: the certificate and key, with Node's root CAs; a CA file alone; nothing
    const t = tlsOptions(c.clickhouse).tls!;
    expect([t.cert?.toString(), t.key?.toString()]).toEqual(['C', 'K']);
    expect(t.ca_cert.toString()).toBe(tls.rootCertificates.join('\n'));
    expect(tlsOptions({ caCert: 'CA', cert: 'C', key: 'K' }).tls!.ca_cert.toString()).toBe('CA');
    expect(tlsOptions({ caCert: 'CA' })).toEqual({ tls: { ca_cert: Buffer.from('CA') } });
    expect(tlsOptions({})).toEqual({});
  });
});

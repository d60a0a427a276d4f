/** Structured JSON logs (pino) on stderr; secrets are redacted wherever they appear. */
import { pino, type Logger } from 'pino';

export const REDACT_PATHS = [
  'password',
  '*.password',
  '*.*.password',
  'config.clickhouse.password',
  'secret',
  '*.secret',
  'authorization',
  '*.authorization',
];

export function createLogger(level: string, name = 'evalgap'): Logger {
  return pino({ name, level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, pino.destination(2));
}

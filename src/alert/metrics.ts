/** Prometheus metrics of the monitor and the webhook dispatcher (one registry per monitor). */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

export function createMonitorMetrics(opts: { registry?: Registry; defaultMetrics?: boolean } = {}) {
  const registry = opts.registry ?? new Registry();
  if (opts.defaultMetrics && !opts.registry) collectDefaultMetrics({ register: registry, prefix: 'evalgap_' });
  const r = [registry];
  return {
    registry,
    firing: new Gauge({ name: 'evalgap_alerts_firing', help: 'alerts currently firing (notified and not resolved)', labelNames: ['rule'], registers: r }),
    notifications: new Counter({
      name: 'evalgap_alert_notifications_total',
      help: 'notifications written to the outbox, by kind (firing, reminder, resolved)',
      labelNames: ['kind'],
      registers: r,
    }),
    inhibited: new Counter({ name: 'evalgap_alerts_inhibited_total', help: 'alerts muted by a global cluster-mix alert', registers: r }),
    deliveries: new Counter({
      name: 'evalgap_alert_deliveries_total',
      help: 'webhook delivery attempts by receiver and result (delivered, retry, expired, invalid)',
      labelNames: ['receiver', 'result'],
      registers: r,
    }),
    lag: new Gauge({ name: 'evalgap_monitor_lag_seconds', help: 'now minus the end of the last evaluated window', registers: r }),
    windows: new Counter({ name: 'evalgap_monitor_windows_evaluated_total', help: 'windows evaluated', registers: r }),
    checkpointBytes: new Counter({
      name: 'evalgap_monitor_checkpoint_bytes_total',
      help: "JSON bytes of checkpoint written: each window's row (part=row) and the reference histories stored once (part=parts)",
      labelNames: ['part'],
      registers: r,
    }),
    leader: new Gauge({ name: 'evalgap_monitor_leader', help: '1 while this instance is the elected evaluator', registers: r }),
    statistic: new Gauge({
      name: 'evalgap_detector_statistic',
      help: "each detector's statistic after the last evaluated window",
      labelNames: ['rule', 'agent', 'cluster'],
      registers: r,
    }),
    threshold: new Gauge({
      name: 'evalgap_detector_threshold',
      help: "each detector's alarm threshold",
      labelNames: ['rule', 'agent', 'cluster'],
      registers: r,
    }),
  };
}

export type MonitorMetrics = ReturnType<typeof createMonitorMetrics>;

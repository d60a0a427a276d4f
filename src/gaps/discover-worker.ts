/**
 * Worker-thread entry of gap discovery's pure core (./discover.ts): `evalgap run` discovers gaps
 * periodically, and the core holds a thread for seconds per pass at 100k uncovered rows; in a
 * worker the consumer's event loop (heartbeats, batches, /metrics) keeps running meanwhile.
 */
import { answerJob } from '../config/workers.js';
import { discover, type DiscoveryInput, type DiscoveryOptions, type DiscoveryResult } from './discover.js';

export interface DiscoverJob {
  input: DiscoveryInput;
  opts: DiscoveryOptions;
}

answerJob<DiscoverJob, { result: DiscoveryResult }>(
  (job) => ({ result: discover(job.input, job.opts) }),
  (r) => [r.result.membership.buffer as ArrayBuffer, r.result.similarity.buffer as ArrayBuffer],
);

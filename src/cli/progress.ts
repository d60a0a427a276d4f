/** A progress bar on a terminal (cli-progress), plain progress lines when stderr is not a TTY. */
import cliProgress from 'cli-progress';

export function progressReporter(label: string): { update: (done: number, total: number) => void; stop: () => void } {
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: `${label} [{bar}] {value}/{total} {percentage}% eta {eta}s`, stream: process.stderr },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update: (done, total) => {
        if (!started) {
          bar.start(total, 0);
          started = true;
        }
        bar.update(done);
      },
      stop: () => started && bar.stop(),
    };
  }
  let lastPct = -1;
  return {
    update: (done, total) => {
      const p = Math.floor((done / total) * 10) * 10;
      if (p !== lastPct) {
        lastPct = p;
        process.stderr.write(`${label}: ${done}/${total} (${p}%)\n`);
      }
    },
    stop: () => {},
  };
}

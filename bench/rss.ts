/**
 * Peak resident memory of a child process, read from `/proc/<pid>/status` (`VmHWM`, the
 * high-water mark) while it runs. Linux only; elsewhere it reports 0.
 *
 * @module
 */

/** Starts watching `pid`; the returned function stops and gives the peak in MB. */
export function watchPeakRss(pid: number, everyMs = 25): () => number {
  let peak = 0;
  const read = () => {
    try {
      const hwm = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
      if (hwm) peak = Math.max(peak, Number(hwm[1]) / 1024);
    } catch {
      // exited, or no /proc
    }
  };
  const timer = setInterval(read, everyMs);
  return () => {
    clearInterval(timer);
    read();
    return peak;
  };
}

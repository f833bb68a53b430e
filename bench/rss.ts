/**
 * What a child process uses while it runs, read from `/proc/<pid>`: its peak resident memory
 * (`VmHWM` in `status`, the high-water mark) and its CPU time (user + system of all its threads,
 * in `stat`). Linux only; elsewhere both are 0.
 *
 * @module
 */

/** What {@link watchProcess} saw of a process. */
export interface ProcessUse {
  /** Peak resident memory, MB. */
  peakRssMb: number;
  /**
   * CPU time of all its threads at the last look (up to one interval before it exited), seconds.
   */
  cpuSeconds: number;
}

/** Linux reports process times in clock ticks of 1/100 s (USER_HZ) on every common ABI. */
const TICKS_PER_SECOND = 100;

/** Starts watching `pid`; the returned function stops and gives what it used. */
export function watchProcess(pid: number, everyMs = 25): () => ProcessUse {
  const use: ProcessUse = { peakRssMb: 0, cpuSeconds: 0 };
  const read = () => {
    try {
      const hwm = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
      if (hwm) use.peakRssMb = Math.max(use.peakRssMb, Number(hwm[1]) / 1024);
      // Fields after the command name (which may hold spaces): utime and stime are the 12th and
      // 13th of them.
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ticks = Number(fields[11]) + Number(fields[12]);
      if (ticks > 0) use.cpuSeconds = Math.max(use.cpuSeconds, ticks / TICKS_PER_SECOND);
    } catch {
      // exited, or no /proc
    }
  };
  const timer = setInterval(read, everyMs);
  return () => {
    clearInterval(timer);
    read();
    return { ...use };
  };
}

/** Starts watching `pid`; the returned function stops and gives the peak in MB. */
export function watchPeakRss(pid: number, everyMs = 25): () => number {
  const stop = watchProcess(pid, everyMs);
  return () => stop().peakRssMb;
}

/**
 * Optional Linux-only file calls through bun:ffi (glibc): `fallocate(2)` reserves the disk blocks
 * of a download before any byte arrives, so the free-space check cannot be raced by other writers
 * and ENOSPC surfaces at the start instead of at 97 %. Anywhere it is not available (macOS, musl,
 * a filesystem without fallocate) callers fall back to a sparse ftruncate.
 */
type Libc = {
  fallocate(fd: number, mode: number, offset: number, len: number): number;
  errno(): number;
};

let libc: Libc | null | undefined;

function load(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (process.platform !== "linux") return libc;
  try {
    // Loaded lazily so that importing this module never fails.
    const ffi = require("bun:ffi") as typeof import("bun:ffi");
    const { symbols } = ffi.dlopen("libc.so.6", {
      fallocate: { args: [ffi.FFIType.i32, ffi.FFIType.i32, ffi.FFIType.i64, ffi.FFIType.i64], returns: ffi.FFIType.i32 },
      __errno_location: { args: [], returns: ffi.FFIType.ptr },
    });
    libc = {
      fallocate: (fd, mode, offset, len) => symbols.fallocate(fd, mode, offset, len) as number,
      errno: () => {
        const p = symbols.__errno_location();
        return p ? ffi.read.i32(p, 0) : 0;
      },
    };
  } catch {
    libc = null;
  }
  return libc;
}

const ENOSPC = 28;

/**
 * Reserve `len` bytes of `fd` from offset 0 (the file size becomes `len`).
 * "reserved": blocks allocated; "nospace": the filesystem is full; "unsupported": nothing done.
 */
export function preallocate(fd: number, len: number): "reserved" | "nospace" | "unsupported" {
  if (len <= 0) return "unsupported";
  const c = load();
  if (!c) return "unsupported";
  try {
    if (c.fallocate(fd, 0, 0, len) === 0) return "reserved";
    return c.errno() === ENOSPC ? "nospace" : "unsupported";
  } catch {
    return "unsupported";
  }
}

using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    // io_uring has the same system call numbers on every architecture (they came after the
    // numbering was unified): include/uapi/asm-generic/unistd.h.
    internal const nint SYS_io_uring_setup = 425;
    internal const nint SYS_io_uring_enter = 426;
    internal const nint SYS_io_uring_register = 427;

    /// <summary>syscall(2) with up to six arguments (glibc's wrapper reads exactly the registers and stack slot it needs).</summary>
    [LibraryImport(Libc, EntryPoint = "syscall", SetLastError = true)]
    internal static partial nint Syscall(nint number, nint a1, nint a2, nint a3, nint a4, nint a5, nint a6);
}

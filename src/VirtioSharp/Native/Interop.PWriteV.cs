using System.Runtime.InteropServices;
using VirtioSharp.Memory;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    /// <summary>pwritev(2): gather write at an offset.</summary>
    [LibraryImport(Libc, EntryPoint = "pwritev", SetLastError = true)]
    internal static unsafe partial nint PWriteV(int fd, IoVec* iov, int iovcnt, long offset);
}

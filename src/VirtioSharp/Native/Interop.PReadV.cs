using System.Runtime.InteropServices;
using VirtioSharp.Memory;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    /// <summary>preadv(2): scatter read at an offset.</summary>
    [LibraryImport(Libc, EntryPoint = "preadv", SetLastError = true)]
    internal static unsafe partial nint PReadV(int fd, IoVec* iov, int iovcnt, long offset);
}

using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    internal const int SO_RCVTIMEO = 20;
    internal const int SO_SNDTIMEO = 21;

    /// <summary>struct timeval (64-bit Linux).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct TimeVal
    {
        public long Seconds;
        public long Microseconds;
    }

    /// <summary>setsockopt(2).</summary>
    [LibraryImport(Libc, EntryPoint = "setsockopt", SetLastError = true)]
    internal static unsafe partial int SetSockOpt(SafeFdHandle socket, int level, int name, void* value, uint length);

    /// <summary>setsockopt(2) on a socket owned by a <see cref="System.Net.Sockets.Socket"/> (NBD: SO_RCVTIMEO).</summary>
    [LibraryImport(Libc, EntryPoint = "setsockopt", SetLastError = true)]
    internal static unsafe partial int SetSockOpt(System.Net.Sockets.SafeSocketHandle socket, int level, int name, void* value, uint length);
}

using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    internal const uint MFD_ALLOW_SEALING = 0x2;
    internal const int F_ADD_SEALS = 1033;
    internal const int F_GET_SEALS = 1034;
    internal const int F_SEAL_SEAL = 0x1;
    internal const int F_SEAL_SHRINK = 0x2;
    internal const int F_SEAL_GROW = 0x4;
    internal const int F_GETFD = 1;
    internal const int F_SETFD = 2;
    internal const int FD_CLOEXEC = 1;

    // fcntl is variadic in C; on x86-64 and arm64 Linux an int passed through "..." travels in the
    // same register as a declared one, so fixed signatures call it correctly.

    /// <summary>fcntl(2) for commands that take no argument (F_GET_SEALS).</summary>
    [LibraryImport(Libc, EntryPoint = "fcntl", SetLastError = true)]
    internal static partial int Fcntl(SafeFdHandle fd, int command);

    /// <summary>fcntl(2) for commands that take an int (F_ADD_SEALS).</summary>
    [LibraryImport(Libc, EntryPoint = "fcntl", SetLastError = true)]
    internal static partial int Fcntl(SafeFdHandle fd, int command, int argument);

    internal const int F_GETFL = 3;
    internal const int F_SETFL = 4;
    internal const int O_NONBLOCK = 0x800;

    /// <summary>fcntl(2) F_GETFL on a socket owned by a <see cref="System.Net.Sockets.Socket"/>.</summary>
    [LibraryImport(Libc, EntryPoint = "fcntl", SetLastError = true)]
    internal static partial int Fcntl(System.Net.Sockets.SafeSocketHandle fd, int command);

    /// <summary>fcntl(2) F_SETFL on a socket owned by a <see cref="System.Net.Sockets.Socket"/> (NBD: blocking receives).</summary>
    [LibraryImport(Libc, EntryPoint = "fcntl", SetLastError = true)]
    internal static partial int Fcntl(System.Net.Sockets.SafeSocketHandle fd, int command, int argument);
}

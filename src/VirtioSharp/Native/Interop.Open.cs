using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    internal const int O_RDONLY = 0;
    internal const int O_RDWR = 2;
    internal const int O_CLOEXEC = 0x80000;

    /// <summary>O_DIRECT: 040000 on x86-64, 0200000 on arm64 (asm-generic/fcntl.h and arch headers).</summary>
    internal static int O_DIRECT => RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? 0x10000 : 0x4000;

    // open is variadic in C (mode); as with fcntl, x86-64 and arm64 pass it in the register a declared int uses.

    /// <summary>open(2); an invalid handle and errno on failure.</summary>
    [LibraryImport(Libc, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial SafeFileHandle Open(string path, int flags, int mode);
}

using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    internal const int AT_FDCWD = -100;
    internal const int AT_SYMLINK_NOFOLLOW = 0x100;
    internal const int AT_EMPTY_PATH = 0x1000;
    internal const uint STATX_TYPE = 0x1;
    internal const uint STATX_SIZE = 0x200;
    internal const uint STATX_DIOALIGN = 0x2000; // Linux 6.1
    internal const int StatxBufferSize = 256;
    // struct statx has the same layout on every architecture (unlike struct stat).
    internal const int StatxModeOffset = 28;
    internal const int StatxMaskOffset = 0;
    internal const int StatxSizeOffset = 40;
    internal const int StatxDioMemAlignOffset = 152;
    internal const int StatxDioOffsetAlignOffset = 156;
    internal const int S_IFMT = 0xF000;
    internal const int S_IFREG = 0x8000;
    internal const int S_IFSOCK = 0xC000;

    /// <summary>statx(2) of a path (relative to the current directory).</summary>
    [LibraryImport(Libc, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static unsafe partial int Statx(int dirFd, string path, int flags, uint mask, byte* buffer);

    /// <summary>statx(2) of an open descriptor (empty path, AT_EMPTY_PATH).</summary>
    [LibraryImport(Libc, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static unsafe partial int Statx(SafeFdHandle fd, string path, int flags, uint mask, byte* buffer);

    /// <summary>statx(2) of an open file (empty path, AT_EMPTY_PATH).</summary>
    [LibraryImport(Libc, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static unsafe partial int Statx(Microsoft.Win32.SafeHandles.SafeFileHandle fd, string path, int flags, uint mask, byte* buffer);
}

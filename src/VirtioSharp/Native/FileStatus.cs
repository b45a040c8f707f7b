using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

/// <summary>The kind of file a path or descriptor names.</summary>
public enum FileKind { Missing, Regular, Socket, Other }

/// <summary>File type and size through statx(2), whose layout is the same on every architecture.</summary>
public static unsafe class FileStatus
{
    /// <summary>What <paramref name="path"/> is, without following a final symbolic link.</summary>
    public static FileKind KindOf(string path)
    {
        var buffer = stackalloc byte[Interop.StatxBufferSize];
        if (Interop.Statx(Interop.AT_FDCWD, path, Interop.AT_SYMLINK_NOFOLLOW, Interop.STATX_TYPE, buffer) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno == Interop.ENOENT)
                return FileKind.Missing;
            throw new NativeCallException($"statx {path}", errno);
        }
        return Kind(*(ushort*)(buffer + Interop.StatxModeOffset));
    }

    /// <summary>The kind and size of an open descriptor.</summary>
    public static FileKind KindOf(SafeFdHandle fd, out ulong size)
    {
        var buffer = stackalloc byte[Interop.StatxBufferSize];
        if (Interop.Statx(fd, "", Interop.AT_EMPTY_PATH, Interop.STATX_TYPE | Interop.STATX_SIZE, buffer) != 0)
            throw NativeCallException.FromLastError("statx");
        size = *(ulong*)(buffer + Interop.StatxSizeOffset);
        return Kind(*(ushort*)(buffer + Interop.StatxModeOffset));
    }

    private static FileKind Kind(ushort mode) => (mode & Interop.S_IFMT) switch
    {
        Interop.S_IFREG => FileKind.Regular,
        Interop.S_IFSOCK => FileKind.Socket,
        _ => FileKind.Other,
    };
}

using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace VirtioSharp.Native;

/// <summary>
/// What O_DIRECT asks of a transfer: buffers in memory aligned to <see cref="Memory"/>, file
/// offsets and lengths (and each buffer's length) multiples of <see cref="Offset"/>, the file
/// system's logical block size. <see cref="Source"/> says how it was found, for the log.
/// </summary>
public readonly record struct DirectIoAlignment(uint Memory, uint Offset, string Source)
{
    /// <summary>Whether a transfer of <paramref name="iov"/> at <paramref name="offset"/> can go to the O_DIRECT descriptor as it is.</summary>
    public bool Fits(ulong offset, ReadOnlySpan<Memory.IoVec> iov)
    {
        var memoryMask = (nuint)Memory - 1;
        var lengthMask = (nuint)Offset - 1;
        if ((offset & lengthMask) != 0)
            return false;
        foreach (var v in iov)
        {
            if (((nuint)v.Base & memoryMask) != 0 || (v.Length & lengthMask) != 0)
                return false;
        }
        return true;
    }
}

/// <summary>Opens files for direct I/O and finds the alignment it needs.</summary>
public static unsafe class DirectIo
{
    /// <summary>
    /// Opens <paramref name="path"/> with O_DIRECT. A file system that has no direct I/O (ramfs;
    /// tmpfs before Linux 6.6) refuses with EINVAL: an <see cref="IOException"/> with one line.
    /// </summary>
    public static SafeFileHandle Open(string path, bool readOnly)
    {
        var handle = Interop.Open(path, (readOnly ? Interop.O_RDONLY : Interop.O_RDWR) | Interop.O_DIRECT | Interop.O_CLOEXEC, 0);
        if (!handle.IsInvalid)
            return handle;
        var errno = Marshal.GetLastPInvokeError();
        handle.Dispose();
        if (errno == Errno.EINVAL)
            throw new IOException($"--cache none: the file system of '{path}' has no direct I/O (open with O_DIRECT: {Marshal.GetPInvokeErrorMessage(errno)}); use --cache writeback");
        throw new IOException($"--cache none: '{path}' cannot be opened with O_DIRECT: {Marshal.GetPInvokeErrorMessage(errno)}");
    }

    /// <summary>The alignment of a descriptor opened with O_DIRECT: statx's STATX_DIOALIGN (Linux 6.1), else a probe.</summary>
    public static DirectIoAlignment Find(SafeFileHandle direct) => FromStatx(direct) ?? Probe(direct);

    /// <summary>statx(STATX_DIOALIGN); null when the kernel or the file system does not report it.</summary>
    public static DirectIoAlignment? FromStatx(SafeFileHandle fd)
    {
        var buffer = stackalloc byte[Interop.StatxBufferSize];
        new Span<byte>(buffer, Interop.StatxBufferSize).Clear();
        if (Interop.Statx(fd, "", Interop.AT_EMPTY_PATH, Interop.STATX_DIOALIGN, buffer) != 0)
            return null;
        var mask = *(uint*)(buffer + Interop.StatxMaskOffset);
        var memory = *(uint*)(buffer + Interop.StatxDioMemAlignOffset);
        var offset = *(uint*)(buffer + Interop.StatxDioOffsetAlignOffset);
        if ((mask & Interop.STATX_DIOALIGN) == 0 || !PowerOfTwo(memory) || !PowerOfTwo(offset) || offset > MaxAlignment)
            return null;
        return new DirectIoAlignment(memory, offset, "statx STATX_DIOALIGN");
    }

    private const uint MaxAlignment = 65536;

    /// <summary>
    /// Reads the first block with O_DIRECT at growing sizes (512 .. 64 KiB) into a page-aligned
    /// buffer: the first size the kernel accepts (not EINVAL) is the logical block size. Memory
    /// alignment is taken as the same (never looser than what the kernel asks).
    /// </summary>
    public static DirectIoAlignment Probe(SafeFileHandle direct)
    {
        var buffer = NativeMemory.AlignedAlloc(MaxAlignment, MaxAlignment);
        var added = false;
        try
        {
            direct.DangerousAddRef(ref added);
            var fd = (int)direct.DangerousGetHandle();
            for (var size = 512u; size <= MaxAlignment; size *= 2)
            {
                nint n;
                do
                    n = Interop.PRead(fd, buffer, size, 0);
                while (n < 0 && Marshal.GetLastPInvokeError() == Errno.EINTR);
                if (n >= 0)
                    return new DirectIoAlignment(size, size, "an O_DIRECT read probe");
                var errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EINVAL)
                    throw new IOException($"--cache none: an O_DIRECT read failed: {Marshal.GetPInvokeErrorMessage(errno)}");
            }
            throw new IOException($"--cache none: no O_DIRECT read of up to {MaxAlignment} bytes was accepted; use --cache writeback");
        }
        finally
        {
            if (added)
                direct.DangerousRelease();
            NativeMemory.AlignedFree(buffer);
        }
    }

    private static bool PowerOfTwo(uint v) => v != 0 && (v & (v - 1)) == 0;
}

using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using VirtioSharp.Memory;
using VirtioSharp.Native;

namespace VirtioSharp.Block;

/// <summary>
/// A raw image file. Reads and writes go straight between the file and guest memory with
/// preadv/pwritev (no bounce buffer); FLUSH is fdatasync; DISCARD punches a hole;
/// WRITE_ZEROES zeroes the range (punching when the driver allows unmapping). Reads and flushes
/// may run on the queue worker's io_uring (<see cref="IAsyncBlockBackend"/>).
/// </summary>
public sealed unsafe class FileBackend : IAsyncBlockBackend
{
    private const int MaxIov = 1024; // IOV_MAX on Linux
    private readonly SafeFileHandle _handle;
    private readonly int _fd;

    private FileBackend(SafeFileHandle handle, string path, ulong length, bool readOnly, uint blockSize)
    {
        _handle = handle;
        _fd = (int)handle.DangerousGetHandle();
        Path = path;
        FileLength = length;
        // Capacity is whole sectors (5.2.4: capacity in 512-byte sectors); a ragged tail is not exposed.
        Capacity = length & ~(ulong)(BlkLayout.SectorSize - 1);
        ReadOnly = readOnly;
        BlockSize = blockSize;
    }

    /// <summary>Opens an image. Throws <see cref="IOException"/> with one clear line on a missing or unusable file.</summary>
    public static FileBackend Open(string path, bool readOnly = false, uint blockSize = 512)
    {
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("the file backend uses Linux preadv/pwritev");
        if (!File.Exists(path))
            throw new FileNotFoundException($"disk image '{path}' does not exist", path);
        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.Open, readOnly ? FileAccess.Read : FileAccess.ReadWrite, FileShare.ReadWrite);
        }
        catch (UnauthorizedAccessException)
        {
            throw new IOException($"disk image '{path}' cannot be opened {(readOnly ? "for reading" : "for writing (try --read-only)")}");
        }
        var length = (ulong)RandomAccess.GetLength(handle);
        if (length < BlkLayout.SectorSize)
        {
            handle.Dispose();
            throw new IOException($"disk image '{path}' is {length} bytes; it must hold at least one 512-byte sector");
        }
        return new FileBackend(handle, path, length, readOnly, blockSize);
    }

    /// <summary>Creates (or replaces) a sparse image file of the given size.</summary>
    public static void Create(string path, ulong size)
    {
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write);
        fs.SetLength((long)size);
    }

    public string Path { get; }
    /// <summary>The image file's length when opened; <see cref="Capacity"/> leaves out a partial last sector.</summary>
    public ulong FileLength { get; }
    public ulong Capacity { get; }
    public uint BlockSize { get; }
    public bool ReadOnly { get; }
    public bool SupportsDiscard => !ReadOnly;
    public bool SupportsWriteZeroes => !ReadOnly;
    public string Description => $"file {Path}";

    /// <summary>
    /// Reads and flushes go to the worker's io_uring (preadv, fdatasync on this file); the rest
    /// is synchronous (see <see cref="BlkDevice"/>'s note on buffered writes).
    /// </summary>
    /// <summary>
    /// Hands a read or a flush to the worker's kernel ring. The submission names the descriptor by
    /// number, so the handle is kept alive by a reference from here to <see cref="Completed"/>:
    /// disposing the backend meanwhile cannot close the descriptor, nor let its number be reused
    /// for another file, under an operation the kernel still runs.
    /// </summary>
    public bool TryStart(in BlkIo op, Devices.IQueueIo io)
    {
        if (op.Kind is not (BlkIoKind.Read or BlkIoKind.Flush))
            return false;
        var added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
            return false; // closed: the synchronous path reports the error
        }
        var started = op.Kind == BlkIoKind.Read
            ? io.TryStartRead(_fd, op.Iov, op.IovCount, op.Offset, op.Tag)
            : io.TryStartFlush(_fd, op.Tag);
        if (!started && added)
            _handle.DangerousRelease();
        return started;
    }

    public void Completed(in BlkIo op) => _handle.DangerousRelease();

    public bool Read(ulong offset, ReadOnlySpan<IoVec> iov) => Transfer(offset, iov, write: false);

    public bool Write(ulong offset, ReadOnlySpan<IoVec> iov) => !ReadOnly && Transfer(offset, iov, write: true);

    private bool Transfer(ulong offset, ReadOnlySpan<IoVec> iov, bool write)
    {
        // Fast path: one syscall for the whole request. Short transfers (rare on regular
        // files) continue element by element from where the kernel stopped.
        var pos = (long)offset;
        var index = 0;
        nuint skip = 0;
        while (index < iov.Length)
        {
            nint done;
            if (skip == 0)
            {
                var count = Math.Min(iov.Length - index, MaxIov);
                fixed (IoVec* p = &iov[index])
                    done = write ? Interop.PWriteV(_fd, p, count, pos) : Interop.PReadV(_fd, p, count, pos);
            }
            else
            {
                var part = new IoVec(iov[index].Base + (nint)skip, iov[index].Length - skip);
                done = write ? Interop.PWriteV(_fd, &part, 1, pos) : Interop.PReadV(_fd, &part, 1, pos);
            }
            if (done < 0)
            {
                if (Marshal.GetLastPInvokeError() == Errno.EINTR)
                    continue;
                return false;
            }
            if (done == 0)
            {
                if (write)
                    return false;
                // Read past end of file: the rest reads as zeroes.
                for (; index < iov.Length; index++, skip = 0)
                    new Span<byte>((void*)(iov[index].Base + (nint)skip), (int)(iov[index].Length - skip)).Clear();
                return true;
            }
            pos += done;
            var left = (nuint)done;
            while (left > 0 && index < iov.Length)
            {
                var avail = iov[index].Length - skip;
                if (left >= avail)
                {
                    left -= avail;
                    index++;
                    skip = 0;
                }
                else
                {
                    skip += left;
                    left = 0;
                }
            }
            while (index < iov.Length && iov[index].Length == skip)
            {
                index++;
                skip = 0;
            }
        }
        return true;
    }

    public bool Flush() => Interop.FDataSync(_fd) == 0 || Marshal.GetLastPInvokeError() == Errno.EINVAL;

    public bool Discard(ulong offset, ulong length)
    {
        if (ReadOnly)
            return false;
        if (Interop.FAllocate(_fd, Interop.FALLOC_FL_PUNCH_HOLE | Interop.FALLOC_FL_KEEP_SIZE, (long)offset, (long)length) == 0)
            return true;
        // A filesystem that cannot punch holes still honours the request: discarded data is undefined (5.2.6.2).
        return Marshal.GetLastPInvokeError() == Errno.EOPNOTSUPP;
    }

    public bool WriteZeroes(ulong offset, ulong length, bool mayUnmap)
    {
        if (ReadOnly)
            return false;
        var mode = mayUnmap ? Interop.FALLOC_FL_PUNCH_HOLE | Interop.FALLOC_FL_KEEP_SIZE : Interop.FALLOC_FL_ZERO_RANGE | Interop.FALLOC_FL_KEEP_SIZE;
        if (Interop.FAllocate(_fd, mode, (long)offset, (long)length) == 0)
            return true;
        return WriteZeroBuffers(offset, length);
    }

    private bool WriteZeroBuffers(ulong offset, ulong length)
    {
        // Fallback for filesystems without fallocate modes: write zeroes for real.
        var zero = new byte[Math.Min(length, 1 << 20)];
        while (length > 0)
        {
            var n = (int)Math.Min(length, (ulong)zero.Length);
            try { RandomAccess.Write(_handle, zero.AsSpan(0, n), (long)offset); }
            catch (IOException) { return false; }
            offset += (ulong)n;
            length -= (ulong)n;
        }
        return true;
    }

    public void Dispose() => _handle.Dispose();
}

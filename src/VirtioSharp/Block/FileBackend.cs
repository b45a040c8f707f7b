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
/// <para>
/// The cache mode (<see cref="FileCacheMode"/>) decides how the page cache is used. With
/// <see cref="FileCacheMode.None"/> the image is opened a second time with O_DIRECT: a transfer
/// whose offset, length and guest buffers fit the file system's alignment goes there (writes too
/// run on io_uring then, since the kernel no longer serialises them in the page cache); one whose
/// guest buffers do not fit is copied through the queue's aligned bounce buffer; one whose offset
/// or length does not fit (a driver that ignores blk_size) goes through the buffered descriptor,
/// where the kernel does the read-modify-write of the partial blocks under the inode's lock, which
/// direct I/O to the same file also takes. Both kinds are counted.
/// </para>
/// </summary>
public sealed unsafe class FileBackend : IAsyncBlockBackend, IResizableBackend
{
    private const int MaxIov = 1024; // IOV_MAX on Linux
    /// <summary>Bytes of each queue's bounce buffer; larger unaligned transfers go through it in pieces.</summary>
    public const uint BounceSize = 256 * 1024;
    private readonly SafeFileHandle _handle;
    private readonly int _fd;
    private readonly SafeFileHandle? _direct; // FileCacheMode.None: the same file opened with O_DIRECT
    private readonly int _directFd;
    private readonly DirectIoAlignment _alignment;
    private readonly BounceBuffers? _bounce;
    private long _syncs;

    private FileBackend(SafeFileHandle handle, string path, ulong length, bool readOnly, uint blockSize, FileCacheMode cache,
        SafeFileHandle? direct, DirectIoAlignment alignment, int queues)
    {
        _handle = handle;
        _fd = (int)handle.DangerousGetHandle();
        Path = path;
        FileLength = length;
        // Capacity is whole sectors (5.2.4: capacity in 512-byte sectors); a ragged tail is not exposed.
        _capacity = length & ~(ulong)(BlkLayout.SectorSize - 1);
        ReadOnly = readOnly;
        BlockSize = blockSize;
        CacheMode = cache;
        _direct = direct;
        _alignment = alignment;
        if (direct is not null)
        {
            _directFd = (int)direct.DangerousGetHandle();
            var align = Math.Max(4096u, Math.Max(alignment.Memory, alignment.Offset));
            _bounce = new BounceBuffers(queues, Math.Max(BounceSize, align), align);
        }
    }

    /// <summary>
    /// Opens an image. Throws <see cref="IOException"/> with one clear line on a missing or unusable
    /// file, or (<see cref="FileCacheMode.None"/>) a file system without direct I/O.
    /// <paramref name="blockSize"/> 0 is the default: the file system's logical block size with
    /// <see cref="FileCacheMode.None"/>, 512 otherwise. <paramref name="queues"/> is the number of
    /// queues that will call with their index (each gets its own bounce buffer, allocated here).
    /// </summary>
    public static FileBackend Open(string path, bool readOnly = false, uint blockSize = 0, FileCacheMode cache = FileCacheMode.Writeback, int queues = 1)
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
        SafeFileHandle? direct = null;
        try
        {
            var length = (ulong)RandomAccess.GetLength(handle);
            if (length < BlkLayout.SectorSize)
                throw new IOException($"disk image '{path}' is {length} bytes; it must hold at least one 512-byte sector");
            var alignment = new DirectIoAlignment(1, 1, "no direct I/O");
            if (cache == FileCacheMode.None)
            {
                direct = DirectIo.Open(path, readOnly);
                alignment = DirectIo.Find(direct);
            }
            if (blockSize == 0)
                blockSize = Math.Max(BlkLayout.SectorSize, cache == FileCacheMode.None ? alignment.Offset : 0);
            return new FileBackend(handle, path, length, readOnly, blockSize, cache, direct, alignment, queues);
        }
        catch
        {
            direct?.Dispose();
            handle.Dispose();
            throw;
        }
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
    /// <summary>Whole sectors of the file, as last looked at (<see cref="RefreshCapacity"/>).</summary>
    public ulong Capacity => Volatile.Read(ref _capacity);
    private ulong _capacity;
    private readonly Lock _refreshLock = new();

    /// <summary>Raised by <see cref="RefreshCapacity"/> when the file's length changed.</summary>
    public event Action<ulong>? CapacityChanged;

    /// <summary>Looks at the file's length now (after someone resized it); true when the capacity changed.</summary>
    public bool RefreshCapacity()
    {
        lock (_refreshLock) // listeners hear the sizes in the order they were read
        {
            long length;
            try
            {
                length = RandomAccess.GetLength(_handle);
            }
            catch (IOException)
            {
                return false;
            }
            var now = (ulong)length & ~(ulong)(BlkLayout.SectorSize - 1);
            if (now == _capacity)
                return false;
            Volatile.Write(ref _capacity, now);
            CapacityChanged?.Invoke(now);
            return true;
        }
    }

    public uint BlockSize { get; }
    public bool ReadOnly { get; }
    public bool SupportsDiscard => !ReadOnly;
    public bool SupportsWriteZeroes => !ReadOnly;
    public string Description => $"file {Path}";
    public FileCacheMode CacheMode { get; }
    /// <summary>What direct I/O asks of a transfer (<see cref="FileCacheMode.None"/>); null otherwise.</summary>
    public DirectIoAlignment? Alignment => _direct is null ? null : _alignment;
    /// <summary>fdatasync calls made for FLUSH requests and stable writes (none with <see cref="FileCacheMode.Unsafe"/>).</summary>
    public long Syncs => Volatile.Read(ref _syncs);
    /// <summary>Requests copied through a bounce buffer because their guest buffers were not aligned (<see cref="FileCacheMode.None"/>).</summary>
    public long Bounced => _bounce?.TotalBounced ?? 0;
    /// <summary>Requests whose offset or length was not aligned, done through the page cache (<see cref="FileCacheMode.None"/>).</summary>
    public long PageCached => _bounce?.TotalPageCached ?? 0;
    public long BouncedOn(int queue) => _bounce?.Bounced(queue) ?? 0;
    public long PageCachedOn(int queue) => _bounce?.PageCached(queue) ?? 0;
    /// <summary>Aligned writes queue <paramref name="queue"/> handed to its io_uring on the O_DIRECT descriptor (<see cref="FileCacheMode.None"/>).</summary>
    public long RingWritesOn(int queue) => _bounce?.RingWrites(queue) ?? 0;

    /// <summary>
    /// Hands a read, a flush, or (O_DIRECT) an aligned write to the worker's kernel ring. The
    /// submission names the descriptor by number, so its handle is kept alive by a reference from
    /// here to <see cref="Completed"/>: disposing the backend meanwhile cannot close the
    /// descriptor, nor let its number be reused for another file, under an operation the kernel
    /// still runs. Refused (so done synchronously): buffered writes (see <see cref="BlkDevice"/>),
    /// writes that must be stable at completion, direct transfers that do not fit the alignment,
    /// and flushes with <see cref="FileCacheMode.Unsafe"/>.
    /// </summary>
    public bool TryStart(in BlkIo op, Devices.IQueueIo io)
    {
        switch (op.Kind)
        {
            case BlkIoKind.Read:
                if (_direct is not null && !_alignment.Fits(op.Offset, op.Vectors))
                    return false;
                break;
            case BlkIoKind.Write:
                if (_direct is null || (op.Flags & BlkIoFlags.Fua) != 0 || ReadOnly || !_alignment.Fits(op.Offset, op.Vectors))
                    return false;
                break;
            case BlkIoKind.Flush:
                if (CacheMode == FileCacheMode.Unsafe)
                    return false;
                break;
            default:
                return false;
        }
        var handle = HandleOf(op.Kind);
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
            return false; // closed: the synchronous path reports the error
        }
        var fd = handle == _handle ? _fd : _directFd;
        var started = op.Kind switch
        {
            BlkIoKind.Read => io.TryStartRead(fd, op.Iov, op.IovCount, op.Offset, op.Tag),
            BlkIoKind.Write => io.TryStartWrite(fd, op.Iov, op.IovCount, op.Offset, op.Tag),
            _ => io.TryStartFlush(fd, op.Tag),
        };
        if (started && op.Kind == BlkIoKind.Flush)
            Interlocked.Increment(ref _syncs);
        else if (started && op.Kind == BlkIoKind.Write)
            _bounce!.CountRingWrite(op.Queue); // only O_DIRECT writes get here, and they have bounce buffers
        if (!started && added)
            handle.DangerousRelease();
        return started;
    }

    /// <summary>Reads and writes use the O_DIRECT descriptor when there is one; flushes the buffered one.</summary>
    private SafeFileHandle HandleOf(BlkIoKind kind) => kind != BlkIoKind.Flush && _direct is not null ? _direct : _handle;

    public void Completed(in BlkIo op) => HandleOf(op.Kind).DangerousRelease();

    public bool Read(ulong offset, ReadOnlySpan<IoVec> iov) => Read(-1, offset, iov);

    public bool Write(ulong offset, ReadOnlySpan<IoVec> iov) => Write(-1, offset, iov);

    public bool Read(int queue, ulong offset, ReadOnlySpan<IoVec> iov) =>
        _direct is null ? Transfer(_fd, offset, iov, write: false) : TransferDirect(queue, offset, iov, write: false);

    public bool Write(int queue, ulong offset, ReadOnlySpan<IoVec> iov) =>
        !ReadOnly && (_direct is null ? Transfer(_fd, offset, iov, write: true) : TransferDirect(queue, offset, iov, write: true));

    /// <summary>
    /// <see cref="FileCacheMode.None"/>: straight to the O_DIRECT descriptor when everything fits;
    /// through the bounce buffer when only the guest buffers do not; through the page cache when
    /// the offset or the length does not.
    /// </summary>
    private bool TransferDirect(int queue, ulong offset, ReadOnlySpan<IoVec> iov, bool write)
    {
        if (_alignment.Fits(offset, iov))
            return Transfer(_directFd, offset, iov, write);
        ulong total = 0;
        foreach (var v in iov)
            total += v.Length;
        if (((offset | total) & (_alignment.Offset - 1)) != 0)
        {
            _bounce!.CountPageCached(queue);
            return Transfer(_fd, offset, iov, write);
        }
        _bounce!.CountBounced(queue);
        return Bounce(queue, offset, iov, total, write);
    }

    /// <summary>Copies between the guest buffers and the queue's aligned buffer, one buffer-full at a time.</summary>
    private bool Bounce(int queue, ulong offset, ReadOnlySpan<IoVec> iov, ulong total, bool write)
    {
        var bounce = _bounce!;
        var buffer = bounce.For(queue);
        var own = buffer == null;
        if (own)
            buffer = bounce.Rent();
        try
        {
            for (ulong done = 0; done < total;)
            {
                var n = (int)Math.Min(total - done, bounce.Size);
                var linear = new Span<byte>(buffer, n);
                if (write)
                {
                    CopyIov(iov, done, linear, toLinear: true);
                    if (!WriteAll(buffer, n, offset + done))
                        return false;
                }
                else
                {
                    if (!ReadAll(buffer, n, offset + done))
                        return false;
                    CopyIov(iov, done, linear, toLinear: false);
                }
                done += (ulong)n;
            }
            return true;
        }
        finally
        {
            if (own)
                BounceBuffers.Return(buffer);
        }
    }

    /// <summary>Copies <paramref name="linear"/>.Length bytes between it and the guest buffers, starting <paramref name="position"/> bytes into them.</summary>
    private static void CopyIov(ReadOnlySpan<IoVec> iov, ulong position, Span<byte> linear, bool toLinear)
    {
        var copied = 0;
        for (var i = 0; i < iov.Length && copied < linear.Length; i++)
        {
            var length = (ulong)iov[i].Length;
            if (position >= length)
            {
                position -= length;
                continue;
            }
            var take = (int)Math.Min(length - position, (ulong)(linear.Length - copied));
            var guest = new Span<byte>((void*)(iov[i].Base + (nint)position), take);
            if (toLinear)
                guest.CopyTo(linear[copied..]);
            else
                linear.Slice(copied, take).CopyTo(guest);
            copied += take;
            position = 0;
        }
    }

    /// <summary>An aligned read into the bounce buffer; after a short read (the end of the file) the rest comes through the page cache, zeroes past the end.</summary>
    private bool ReadAll(byte* buffer, int count, ulong offset)
    {
        var fd = _directFd;
        var got = 0;
        while (got < count)
        {
            var n = Interop.PRead(fd, buffer + got, (nuint)(count - got), (long)offset + got);
            if (n < 0)
            {
                if (Marshal.GetLastPInvokeError() == Errno.EINTR)
                    continue;
                return false;
            }
            if (n == 0)
            {
                new Span<byte>(buffer + got, count - got).Clear();
                return true;
            }
            got += (int)n;
            fd = _fd; // what is left is no longer aligned
        }
        return true;
    }

    private bool WriteAll(byte* buffer, int count, ulong offset)
    {
        var fd = _directFd;
        var put = 0;
        while (put < count)
        {
            var n = Interop.PWrite(fd, buffer + put, (nuint)(count - put), (long)offset + put);
            if (n < 0)
            {
                if (Marshal.GetLastPInvokeError() == Errno.EINTR)
                    continue;
                return false;
            }
            if (n == 0)
                return false;
            put += (int)n;
            fd = _fd;
        }
        return true;
    }

    private bool Transfer(int fd, ulong offset, ReadOnlySpan<IoVec> iov, bool write)
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
                    done = write ? Interop.PWriteV(fd, p, count, pos) : Interop.PReadV(fd, p, count, pos);
            }
            else
            {
                var part = new IoVec(iov[index].Base + (nint)skip, iov[index].Length - skip);
                done = write ? Interop.PWriteV(fd, &part, 1, pos) : Interop.PReadV(fd, &part, 1, pos);
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
            if (skip != 0)
                fd = _fd; // stopped inside a buffer: the rest is no longer aligned for O_DIRECT
        }
        return true;
    }

    public string? FlushIgnored => CacheMode == FileCacheMode.Unsafe ? "--cache unsafe ignores flushes" : null;

    public bool Flush()
    {
        if (CacheMode == FileCacheMode.Unsafe)
            return true; // --cache unsafe: acknowledged without fdatasync
        Interlocked.Increment(ref _syncs);
        return Interop.FDataSync(_fd) == 0 || Marshal.GetLastPInvokeError() == Errno.EINVAL;
    }

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

    public void Dispose()
    {
        _handle.Dispose();
        _direct?.Dispose();
        _bounce?.Dispose();
    }
}

using VirtioSharp.Memory;

namespace VirtioSharp.Block;

/// <summary>
/// Storage behind a block device. Offsets and lengths are in bytes and already checked
/// against <see cref="Capacity"/> by the caller. Methods return false on an I/O error;
/// they never throw for a failed I/O. A backend that can keep many requests in flight also
/// implements <see cref="IAsyncBlockBackend"/>; these calls stay its synchronous fallback.
/// </summary>
public interface IBlockBackend : IDisposable
{
    ulong Capacity { get; }
    /// <summary>Logical block size the storage needs for direct I/O (512 or 4096).</summary>
    uint BlockSize { get; }
    bool ReadOnly { get; }
    bool SupportsDiscard { get; }
    bool SupportsWriteZeroes { get; }
    string Description { get; }

    bool Read(ulong offset, ReadOnlySpan<IoVec> iov);
    bool Write(ulong offset, ReadOnlySpan<IoVec> iov);
    /// <summary>
    /// <see cref="Read(ulong, ReadOnlySpan{IoVec})"/> on behalf of queue <paramref name="queue"/>'s
    /// worker, so a backend can use per-queue scratch (a bounce buffer) without a lock.
    /// </summary>
    bool Read(int queue, ulong offset, ReadOnlySpan<IoVec> iov) => Read(offset, iov);

    /// <summary><see cref="Write(ulong, ReadOnlySpan{IoVec})"/> on behalf of queue <paramref name="queue"/>'s worker.</summary>
    bool Write(int queue, ulong offset, ReadOnlySpan<IoVec> iov) => Write(offset, iov);

    bool Flush();

    /// <summary>
    /// Why <see cref="Flush"/> makes nothing durable (an image served with <c>--cache unsafe</c>, a
    /// device that stores nothing), so that logs do not claim a flush; null when it does flush.
    /// </summary>
    string? FlushIgnored => null;
    bool Discard(ulong offset, ulong length);
    bool WriteZeroes(ulong offset, ulong length, bool mayUnmap);
}

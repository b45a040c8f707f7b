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
    bool Flush();
    bool Discard(ulong offset, ulong length);
    bool WriteZeroes(ulong offset, ulong length, bool mayUnmap);
}

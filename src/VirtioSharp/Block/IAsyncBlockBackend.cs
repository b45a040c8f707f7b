using VirtioSharp.Devices;
using VirtioSharp.Memory;

namespace VirtioSharp.Block;

/// <summary>What an asynchronous operation does.</summary>
public enum BlkIoKind : byte
{
    Read,
    Write,
    Flush,
    Discard,
    WriteZeroes,
}

/// <summary>Flags of one operation.</summary>
[Flags]
public enum BlkIoFlags : byte
{
    None = 0,
    /// <summary>A write that must be stable when it completes (5.2.6.2: FLUSH offered but not negotiated).</summary>
    Fua = 1,
    /// <summary>WRITE_ZEROES may deallocate the range (5.2.6.2: VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP).</summary>
    MayUnmap = 2,
}

/// <summary>
/// One operation a queue's worker starts on an <see cref="IAsyncBlockBackend"/>. Offset and
/// length are checked against the capacity; for reads and writes <see cref="Iov"/> names the
/// guest buffers (<see cref="Length"/> bytes in all), and that array and the buffers stay valid
/// until the operation is completed.
/// </summary>
public readonly unsafe struct BlkIo
{
    public BlkIoKind Kind { get; init; }
    public BlkIoFlags Flags { get; init; }
    /// <summary>Names the operation when it completes; unique among the queue's operations in flight.</summary>
    public ushort Tag { get; init; }
    public int Queue { get; init; }
    public ulong Offset { get; init; }
    /// <summary>Bytes to read or write, discard or zero; 0 for a flush.</summary>
    public uint Length { get; init; }
    public IoVec* Iov { get; init; }
    public int IovCount { get; init; }

    public ReadOnlySpan<IoVec> Vectors => new(Iov, IovCount);
}

/// <summary>
/// A backend that can have many operations of one queue in flight. The queue's worker calls
/// <see cref="TryStart"/> and goes on with other requests; the operation is completed exactly
/// once, later, in one of two ways:
/// <list type="bullet">
/// <item>by the worker's own kernel ring: the backend hands a file operation to
/// <see cref="IQueueIo.TryStartRead"/> / <see cref="IQueueIo.TryStartFlush"/> with the op's tag
/// (the result is what the system call returns);</item>
/// <item>from any thread (a storage client's): <c>io.Completions.Post(op.Tag, result)</c>, or
/// <see cref="CompletionPort.PostCookie"/> with <c>io.Completions.NativeCookie(op.Tag)</c> from
/// a C callback. The port wakes the worker, which writes the status byte and the used element.</item>
/// </list>
/// The result is a negative errno for a failure; otherwise, for a read, the bytes that arrived
/// (fewer than asked: the rest is read through the synchronous <see cref="IBlockBackend.Read"/>),
/// and for every other kind any value &gt;= 0. The worker leaves, and guest memory is unmapped,
/// only once every started operation has completed, so a backend must complete each one in
/// bounded time: a remote backend fails it (-EIO, -ETIMEDOUT) after its documented timeout.
/// The synchronous <see cref="IBlockBackend"/> methods stay the fallback: what
/// <see cref="TryStart"/> refuses, and transports that lend no <see cref="IQueueIo"/>.
/// </summary>
public interface IAsyncBlockBackend : IBlockBackend
{
    /// <summary>
    /// Starts <paramref name="op"/>; false when it cannot be taken now (the device then runs it
    /// synchronously), in which case it must not complete. Never throws for a failed I/O.
    /// Called only by the worker of <paramref name="op"/>'s queue.
    /// </summary>
    bool TryStart(in BlkIo op, IQueueIo io);

    /// <summary>
    /// An operation <see cref="TryStart"/> took has completed and the device is done with its
    /// result. A backend that handed a descriptor to the worker's kernel ring lets go of the
    /// reference it took on it then.
    /// </summary>
    void Completed(in BlkIo op)
    {
    }
}

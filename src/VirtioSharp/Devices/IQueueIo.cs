using VirtioSharp.Block;

namespace VirtioSharp.Devices;

/// <summary>
/// Asynchronous file I/O that a queue's worker lends its device, so one queue can have many
/// reads in the host kernel at once, and a flush that does not hold up the queue. The device starts an operation tagged with the head of
/// its chain; the worker later hands the result to <see cref="IVirtioDevice.CompleteIo"/> on the
/// same thread. The iovec array and every buffer it names must stay valid until then, and a
/// worker never stops, or lets guest memory be unmapped, while an operation is outstanding.
/// </summary>
public unsafe interface IQueueIo
{
    /// <summary>Starts preadv; false when it cannot be taken now (the device then does it itself).</summary>
    bool TryStartRead(int fd, IoVec* iov, int count, ulong offset, ushort tag);

    /// <summary>Starts fdatasync; false when it cannot be taken now.</summary>
    bool TryStartFlush(int fd, ushort tag);
}

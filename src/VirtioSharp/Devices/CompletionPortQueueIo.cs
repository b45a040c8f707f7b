using VirtioSharp.Memory;

namespace VirtioSharp.Devices;

/// <summary>
/// <see cref="IQueueIo"/> of a worker without a kernel ring: file operations are refused (the
/// device does them synchronously), completions from other threads arrive on the port.
/// </summary>
public sealed unsafe class CompletionPortQueueIo(CompletionPort port) : IQueueIo
{
    public bool TryStartRead(int fd, IoVec* iov, int count, ulong offset, ushort tag) => false;

    public bool TryStartFlush(int fd, ushort tag) => false;

    public CompletionPort Completions => port;
}

using VirtioSharp.Block;
using VirtioSharp.Memory;

namespace VirtioSharp.Tests.Support;

/// <summary>
/// A memory disk that can be resized while served, up to the memory behind it: what a test does
/// to an RBD image with <c>rbd resize</c> or to a file with <c>truncate</c>.
/// </summary>
public sealed class ResizableBackend(ulong capacity, ulong maxCapacity) : IResizableBackend
{
    private readonly MemoryBackend _inner = new(maxCapacity);
    private ulong _capacity = capacity;
    private ulong _pending = capacity;

    public ulong Capacity => Volatile.Read(ref _capacity);
    public uint BlockSize => 512;
    public bool ReadOnly => false;
    public bool SupportsDiscard => true;
    public bool SupportsWriteZeroes => true;
    public string Description => $"resizable memory {Capacity} bytes";

    public event Action<ulong>? CapacityChanged;

    /// <summary>Changes the size now and tells the listeners, as a watched image does.</summary>
    public void Resize(ulong bytes)
    {
        Assert.True(bytes <= _inner.Capacity, $"{bytes} is more than the {_inner.Capacity} bytes behind this disk");
        Volatile.Write(ref _pending, bytes);
        RefreshCapacity();
    }

    public bool RefreshCapacity()
    {
        var now = Volatile.Read(ref _pending);
        if (Interlocked.Exchange(ref _capacity, now) == now)
            return false;
        CapacityChanged?.Invoke(now);
        return true;
    }

    public Span<byte> Contents(ulong offset, int length) => _inner.Contents(offset, length);
    public bool Read(ulong offset, ReadOnlySpan<IoVec> iov) => _inner.Read(offset, iov);
    public bool Write(ulong offset, ReadOnlySpan<IoVec> iov) => _inner.Write(offset, iov);
    public bool Flush() => _inner.Flush();
    public bool Discard(ulong offset, ulong length) => _inner.Discard(offset, length);
    public bool WriteZeroes(ulong offset, ulong length, bool mayUnmap) => _inner.WriteZeroes(offset, length, mayUnmap);
    public void Dispose() => _inner.Dispose();
}

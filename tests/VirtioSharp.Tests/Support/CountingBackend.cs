using VirtioSharp.Block;
using VirtioSharp.Memory;

namespace VirtioSharp.Tests.Support;

/// <summary>A memory disk that counts what the device asks of it, and can be told to fail.</summary>
public sealed class CountingBackend(ulong capacity, bool readOnly = false) : IBlockBackend
{
    private readonly MemoryBackend _inner = new(capacity, readOnly);
    private int _reads, _writes, _flushes, _discards, _writeZeroes;

    public MemoryBackend Inner => _inner;
    public int Reads => Volatile.Read(ref _reads);
    public int Writes => Volatile.Read(ref _writes);
    public int Flushes => Volatile.Read(ref _flushes);
    public int Discards => Volatile.Read(ref _discards);
    public int WriteZeroesCalls => Volatile.Read(ref _writeZeroes);
    public bool LastWriteZeroesMayUnmap { get; private set; }
    public bool FailFlush { get; set; }

    public ulong Capacity => _inner.Capacity;
    public uint BlockSize => _inner.BlockSize;
    public bool ReadOnly => _inner.ReadOnly;
    public bool SupportsDiscard => _inner.SupportsDiscard;
    public bool SupportsWriteZeroes => _inner.SupportsWriteZeroes;
    public string Description => "counting " + _inner.Description;

    public Span<byte> Contents(ulong offset, int length) => _inner.Contents(offset, length);

    public bool Read(ulong offset, ReadOnlySpan<IoVec> iov)
    {
        Interlocked.Increment(ref _reads);
        return _inner.Read(offset, iov);
    }

    public bool Write(ulong offset, ReadOnlySpan<IoVec> iov)
    {
        Interlocked.Increment(ref _writes);
        return _inner.Write(offset, iov);
    }

    public bool Flush()
    {
        Interlocked.Increment(ref _flushes);
        return !FailFlush && _inner.Flush();
    }

    public bool Discard(ulong offset, ulong length)
    {
        Interlocked.Increment(ref _discards);
        return _inner.Discard(offset, length);
    }

    public bool WriteZeroes(ulong offset, ulong length, bool mayUnmap)
    {
        Interlocked.Increment(ref _writeZeroes);
        LastWriteZeroesMayUnmap = mayUnmap;
        return _inner.WriteZeroes(offset, length, mayUnmap);
    }

    public void Dispose() => _inner.Dispose();
}

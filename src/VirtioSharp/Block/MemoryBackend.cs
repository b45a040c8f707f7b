using System.Runtime.InteropServices;
using VirtioSharp.Memory;

namespace VirtioSharp.Block;

/// <summary>A disk held in native memory (for tests and benchmarks).</summary>
public sealed unsafe class MemoryBackend : IBlockBackend
{
    private byte* _data;

    public MemoryBackend(ulong capacity, bool readOnly = false, uint blockSize = 512)
    {
        if (capacity == 0 || capacity % BlkLayout.SectorSize != 0)
            throw new ArgumentOutOfRangeException(nameof(capacity), "capacity must be a non-zero multiple of 512 bytes");
        _data = (byte*)NativeMemory.AlignedAlloc((nuint)capacity, 4096);
        NativeMemory.Clear(_data, (nuint)capacity);
        Capacity = capacity;
        ReadOnly = readOnly;
        BlockSize = blockSize;
    }

    public ulong Capacity { get; }
    public uint BlockSize { get; }
    public bool ReadOnly { get; }
    public bool SupportsDiscard => !ReadOnly;
    public bool SupportsWriteZeroes => !ReadOnly;
    public string Description => $"memory {Capacity} bytes";

    /// <summary>The disk's contents, for tests.</summary>
    public Span<byte> Contents(ulong offset, int length)
    {
        if (offset > Capacity || (ulong)length > Capacity - offset)
            throw new ArgumentOutOfRangeException(nameof(offset));
        return new Span<byte>(_data + offset, length);
    }

    public bool Read(ulong offset, ReadOnlySpan<IoVec> iov)
    {
        var pos = _data + offset;
        foreach (var v in iov)
        {
            Buffer.MemoryCopy(pos, (void*)v.Base, v.Length, v.Length);
            pos += v.Length;
        }
        return true;
    }

    public bool Write(ulong offset, ReadOnlySpan<IoVec> iov)
    {
        if (ReadOnly)
            return false;
        var pos = _data + offset;
        foreach (var v in iov)
        {
            Buffer.MemoryCopy((void*)v.Base, pos, v.Length, v.Length);
            pos += v.Length;
        }
        return true;
    }

    public bool Flush() => true;

    public bool Discard(ulong offset, ulong length) => WriteZeroes(offset, length, true);

    public bool WriteZeroes(ulong offset, ulong length, bool mayUnmap)
    {
        if (ReadOnly)
            return false;
        NativeMemory.Clear(_data + offset, (nuint)length);
        return true;
    }

    public void Dispose()
    {
        if (_data != null)
        {
            NativeMemory.AlignedFree(_data);
            _data = null;
        }
    }
}

using System.Runtime.InteropServices;
using VirtioSharp.Memory;

namespace VirtioSharp.Block;

/// <summary>Reads zeroes, drops writes: measures the stack without storage.</summary>
public sealed unsafe class NullBackend(ulong capacity, bool readOnly = false, uint blockSize = 512) : IBlockBackend
{
    public ulong Capacity { get; } = capacity;
    public uint BlockSize { get; } = blockSize;
    public bool ReadOnly { get; } = readOnly;
    public bool SupportsDiscard => !ReadOnly;
    public bool SupportsWriteZeroes => !ReadOnly;
    public string Description => $"null {Capacity} bytes";

    public bool Read(ulong offset, ReadOnlySpan<IoVec> iov)
    {
        foreach (var v in iov)
            NativeMemory.Clear((void*)v.Base, v.Length);
        return true;
    }

    public bool Write(ulong offset, ReadOnlySpan<IoVec> iov) => !ReadOnly;
    public bool Flush() => true;
    public string? FlushIgnored => "a null device stores nothing";
    public bool Discard(ulong offset, ulong length) => !ReadOnly;
    public bool WriteZeroes(ulong offset, ulong length, bool mayUnmap) => !ReadOnly;
    public void Dispose() { }
}

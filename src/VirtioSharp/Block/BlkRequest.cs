using System.Runtime.CompilerServices;
using VirtioSharp.Memory;
using VirtioSharp.Queues;

namespace VirtioSharp.Block;

/// <summary>A request located in guest memory: header fields, where the data is, where the status goes.</summary>
internal unsafe ref struct BlkRequest
{
    public int Queue;               // where the request came from, for breach reports
    public ushort Head;
    public ReadOnlySpan<ChainBuffer> Buffers;
    public BlkRequestHeader Header;
    public byte* Status;
    public ulong StatusAddress;
    public int FirstReadable;       // index of first buffer after the header bytes
    public uint ReadableSkip;       // header bytes still inside that buffer
    public ulong ReadableData;      // device-readable bytes after the header
    public ulong WritableData;      // device-writable bytes before the status byte
    public int ReadableCount;
    public ulong DataLength;
    public uint Written;
    public long Started;            // Stopwatch timestamp when the chain was taken

    /// <summary>Copies device-readable bytes after the header, starting <paramref name="offset"/> bytes in.</summary>
    public static void CopyReadable(ref BlkRequest req, ulong offset, scoped Span<byte> destination)
    {
        // Parse checked every buffer is inside guest memory; the caller keeps
        // offset + destination.Length within ReadableData.
        var written = 0;
        var pos = 0UL;
        for (var i = req.FirstReadable; i < req.ReadableCount && written < destination.Length; i++)
        {
            var b = req.Buffers[i];
            var skip = i == req.FirstReadable ? req.ReadableSkip : 0u;
            var avail = (ulong)(b.Length - skip);
            if (pos + avail > offset)
            {
                var start = offset > pos ? offset - pos : 0;
                var take = (int)Math.Min(avail - start, (ulong)(destination.Length - written));
                new ReadOnlySpan<byte>((void*)(b.Host + (nint)(skip + start)), take).CopyTo(destination[written..]);
                written += take;
                offset += (ulong)take;
            }
            pos += avail;
        }
    }

    /// <summary>The longest data buffer of an IN or OUT request, counted as <see cref="BuildIoVec"/> cuts them.</summary>
    public static ulong LongestDataSegment(ref BlkRequest req)
    {
        var writable = (BlkRequestType)req.Header.Type == BlkRequestType.In;
        var buffers = req.Buffers;
        var length = req.DataLength;
        var start = writable ? req.ReadableCount : req.FirstReadable;
        var end = writable ? buffers.Length : req.ReadableCount;
        ulong longest = 0;
        for (var i = start; i < end && length > 0; i++)
        {
            var skip = !writable && i == req.FirstReadable ? req.ReadableSkip : 0u;
            var take = Math.Min((ulong)(buffers[i].Length - skip), length);
            longest = Math.Max(longest, take);
            length -= take;
        }
        return longest;
    }

    /// <summary>
    /// Fills <paramref name="iov"/> with the data part of the chain: device-readable bytes after the
    /// header, or device-writable bytes before the status byte, up to <paramref name="length"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int BuildIoVec(ref BlkRequest req, Span<IoVec> iov, bool writable, ulong length)
    {
        var buffers = req.Buffers;
        var count = 0;
        var start = writable ? req.ReadableCount : req.FirstReadable;
        var end = writable ? buffers.Length : req.ReadableCount;
        for (var i = start; i < end && length > 0; i++)
        {
            ref readonly var b = ref buffers[i];
            var skip = !writable && i == req.FirstReadable ? req.ReadableSkip : 0u;
            var take = Math.Min((ulong)(b.Length - skip), length);
            if (take == 0)
                continue;
            iov[count++] = new IoVec(b.Host + (nint)skip, (nuint)take);
            length -= take;
        }
        return count;
    }
}

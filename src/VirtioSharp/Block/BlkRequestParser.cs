using VirtioSharp.Diagnostics;
using VirtioSharp.Queues;

namespace VirtioSharp.Block;

/// <summary>Locates a virtio-blk request in a descriptor chain: header, data and status byte (5.2.6).</summary>
internal static unsafe class BlkRequestParser
{
    /// <summary>
    /// 5.2.6 / 2.7.4: finds the 16-byte header in the first device-readable bytes and the status
    /// in the last device-writable byte, whatever the descriptor layout. False if the chain
    /// cannot carry a request (Status is set when a status byte exists).
    /// </summary>
    public static bool Parse(BreachReporter breaches, int queue, in DescriptorChain chain, out BlkRequest req)
    {
        req = default;
        var buffers = chain.Buffers;
        req.Queue = queue;
        req.Head = chain.Head;
        req.Buffers = buffers;
        if (chain.IsStructurallyBroken)
        {
            breaches.Report(chain.Error.Section(chain.Format), queue, chain.ErrorDescriptor, chain.Error.Expected(), chain.Error.Describe());
            return false;
        }
        if (buffers.Length == 0)
            return false;
        ref readonly var last = ref buffers[^1];
        if (!last.Writable || last.Length == 0 || last.Host == 0)
        {
            breaches.Report("5.2.6", queue, chain.Head, "a device-writable status byte at the end of the chain",
                last.Writable ? (last.Length == 0 ? "an empty last buffer" : "a last buffer outside guest memory") : "a device-readable last buffer");
            return false;
        }
        req.Status = (byte*)(last.Host + (nint)(last.Length - 1));
        req.StatusAddress = last.Address + last.Length - 1;
        if (chain.Error != ChainError.None)
        {
            breaches.Report(chain.Error.Section(chain.Format), queue, chain.ErrorDescriptor, chain.Error.Expected(), chain.Error.Describe());
            return false;
        }

        ulong readable = 0, writable = 0;
        var readableCount = 0;
        foreach (ref readonly var b in buffers)
        {
            if (b.Writable)
                writable += b.Length;
            else
            {
                readable += b.Length;
                readableCount++;
            }
        }
        req.ReadableCount = readableCount;
        if (buffers[0].Writable)
        {
            breaches.Report("5.2.6", queue, chain.Head, "a device-readable request header", "the first buffer is device-writable");
            return false;
        }
        if (readable < BlkLayout.HeaderSize)
        {
            breaches.Report("5.2.6", queue, chain.Head, $"a device-readable header of {BlkLayout.HeaderSize} bytes", $"{readable} device-readable bytes");
            return false;
        }

        Span<byte> header = stackalloc byte[BlkLayout.HeaderSize];
        var copied = 0;
        var index = 0;
        uint skip = 0;
        while (copied < BlkLayout.HeaderSize)
        {
            ref readonly var b = ref buffers[index];
            var n = (int)Math.Min(b.Length, (uint)(BlkLayout.HeaderSize - copied));
            new ReadOnlySpan<byte>((void*)b.Host, n).CopyTo(header[copied..]);
            copied += n;
            if (n == b.Length) index++;
            else skip = (uint)n;
        }
        req.Header = BlkRequestHeader.Read(header);
        req.FirstReadable = index;
        req.ReadableSkip = skip;
        req.ReadableData = readable - BlkLayout.HeaderSize;
        req.WritableData = writable - 1;
        return true;
    }
}

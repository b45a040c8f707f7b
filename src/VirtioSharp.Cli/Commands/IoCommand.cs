using System.CommandLine;
using System.Globalization;
using VirtioSharp.Block;
using VirtioSharp.Cli.Frontend;
using VirtioSharp.Devices;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.Cli.Commands;

/// <summary>
/// <c>vblk io --socket PATH SUB</c>: one block operation against a vhost-user-blk back-end
/// (qemu-storage-daemon, <c>vblk serve</c>, ...), driven by our own front-end and virtio-blk driver.
/// </summary>
public static class IoCommand
{
    private const int Chunk = 1 << 20;

    /// <summary>Connects as every sub-command does: with --reconnect, and its messages on stderr.</summary>
    private static FrontendSession Open(System.CommandLine.ParseResult parse, Option<string> socket, Option<bool> packed, string command)
    {
        var error = parse.InvocationConfiguration.Error;
        return FrontendSession.Open(parse.GetValue(socket)!, reconnect: FrontendSession.ReconnectTimeout(parse.GetValue<double>("--reconnect")),
            onReconnect: line => error.WriteLine($"vblk io {command}: {line}"), packed: parse.GetValue(packed));
    }

    public static Command Create()
    {
        var socket = new Option<string>("--socket")
        {
            Description = "Unix socket of the vhost-user-blk back-end",
            Required = true,
            Recursive = true,
        };
        var packed = new Option<bool>("--packed")
        {
            Description = "Use packed virtqueues (VIRTIO_F_RING_PACKED); fails if the back-end does not offer them",
            Recursive = true,
        };
        var io = new Command("io", "Run block requests against a vhost-user-blk back-end through our virtio-blk driver");
        io.Add(socket);
        io.Add(FrontendSession.ReconnectOption(recursive: true));
        io.Add(packed);
        io.Add(Info(socket, packed));
        io.Add(Read(socket, packed));
        io.Add(Write(socket, packed));
        io.Add(Flush(socket, packed));
        io.Add(Ranged("discard", "Discard (unmap) a byte range (VIRTIO_BLK_T_DISCARD)", socket, packed,
            (s, offset, length, ct) => s.Driver.DiscardAsync(offset, length, ct)));
        io.Add(Ranged("write-zeroes", "Zero a byte range without sending data (VIRTIO_BLK_T_WRITE_ZEROES)", socket, packed,
            (s, offset, length, ct) => s.Driver.WriteZeroesAsync(offset, length, false, ct)));
        io.Add(Verify(socket, packed));
        return io;
    }

    private static Option<string> OffsetOption(bool required = true) => new("--offset")
    {
        Description = "Byte offset on the disk (multiple of 512; K/M/G suffixes allowed)",
        Required = required,
        DefaultValueFactory = _ => "0",
    };

    private static Option<string> LengthOption() => new("--length")
    {
        Description = "Bytes (multiple of 512; K/M/G suffixes allowed)",
        Required = true,
    };

    // ---------------------------------------------------------------- info

    private static Command Info(Option<string> socket, Option<bool> packed)
    {
        var cmd = new Command("info", "Show what the back-end offers and what the driver negotiated");
        cmd.SetAction((parse, ct) => CliErrors.RunAsync("io info", parse.InvocationConfiguration.Error, async () =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            var stderr = parse.InvocationConfiguration.Error;
            using var s = Open(parse, socket, packed, "info");
            var d = s.Driver;
            var t = s.Transport;
            var c = d.Config;
            string serial;
            try
            {
                serial = await d.GetIdAsync(ct);
            }
            catch (BlkException e)
            {
                serial = $"(unavailable: {e.Message})";
            }
            var w = stdout;
            w.WriteLine($"socket            {t.SocketPath}");
            w.WriteLine($"device features   {BlkFeatures.Describe(t.GetDeviceFeatures())}");
            w.WriteLine($"negotiated        {BlkFeatures.Describe(d.Features)}");
            w.WriteLine($"protocol features {VhostUserFeatures.DescribeProtocol(t.BackendProtocolFeatures)} (using {VhostUserFeatures.DescribeProtocol(t.ProtocolFeatures)})");
            w.WriteLine($"capacity          {d.Capacity} bytes ({Sizes.Format(d.Capacity)}, {c.Capacity} sectors)");
            w.WriteLine($"block size        {d.BlockSize}");
            w.WriteLine($"read-only         {(d.ReadOnly ? "yes" : "no")}");
            w.WriteLine($"queues            {d.QueueCount} in use, device has {c.NumQueues}{(t.BackendQueueCount is { } n ? $", back-end supports {n}" : "")}");
            w.WriteLine($"queue size        {d.QueueSize(0)} (depth {d.Depth})");
            w.WriteLine($"seg_max           {c.SegMax}");
            w.WriteLine($"size_max          {c.SizeMax}");
            if (VirtioFeatures.Has(d.Features, BlkFeatures.Discard))
                w.WriteLine($"discard           max {c.MaxDiscardSectors} sectors, {c.MaxDiscardSeg} segments, alignment {c.DiscardSectorAlignment} sectors");
            if (VirtioFeatures.Has(d.Features, BlkFeatures.WriteZeroes))
                w.WriteLine($"write-zeroes      max {c.MaxWriteZeroesSectors} sectors, {c.MaxWriteZeroesSeg} segments, may unmap {(c.WriteZeroesMayUnmap != 0 ? "yes" : "no")}");
            w.WriteLine($"serial            {serial}");
            return 0;
        }));
        return cmd;
    }

    // ---------------------------------------------------------------- read / write

    private static Command Read(Option<string> socket, Option<bool> packed)
    {
        var offset = OffsetOption();
        var length = LengthOption();
        var output = new Option<string?>("--out") { Description = "Write the data to this file instead of a hexdump on stdout" };
        var cmd = new Command("read", "Read a byte range; hexdump to stdout, or raw bytes to --out") { offset, length, output };
        cmd.SetAction((parse, ct) => CliErrors.RunAsync("io read", parse.InvocationConfiguration.Error, async () =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            var stderr = parse.InvocationConfiguration.Error;
            var off = Sizes.Parse(parse.GetValue(offset)!, "--offset");
            var len = Sizes.Parse(parse.GetValue(length)!, "--length");
            var outPath = parse.GetValue(output);
            using var s = Open(parse, socket, packed, "read");
            s.CheckRange(off, len, "read");
            await using var file = outPath is null ? null : new FileStream(outPath, FileMode.Create, FileAccess.Write);
            var dump = outPath is null ? new Hexdump(stdout) : null;
            var buffer = new byte[(int)Math.Min((ulong)Chunk, Math.Max(len, 1))];
            for (ulong done = 0; done < len;)
            {
                var n = (int)Math.Min((ulong)buffer.Length, len - done);
                await s.Driver.ReadAsync(off + done, buffer.AsMemory(0, n), ct);
                if (file is not null)
                    await file.WriteAsync(buffer.AsMemory(0, n), ct);
                else
                    dump!.Write(off + done, buffer.AsSpan(0, n));
                done += (ulong)n;
            }
            dump?.Finish(off + len);
            if (file is not null)
                stderr.WriteLine($"read {len} bytes at offset {off} into {outPath}");
            return 0;
        }));
        return cmd;
    }

    private static Command Write(Option<string> socket, Option<bool> packed)
    {
        var offset = OffsetOption();
        var input = new Option<string>("--in") { Description = "File whose bytes are written (its size must be a multiple of 512)", Required = true };
        var cmd = new Command("write", "Write a file's bytes at an offset") { offset, input };
        cmd.SetAction((parse, ct) => CliErrors.RunAsync("io write", parse.InvocationConfiguration.Error, async () =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            var stderr = parse.InvocationConfiguration.Error;
            var off = Sizes.Parse(parse.GetValue(offset)!, "--offset");
            var inPath = parse.GetValue(input)!;
            if (!File.Exists(inPath))
                throw new CliException($"input file '{inPath}' does not exist");
            await using var file = new FileStream(inPath, FileMode.Open, FileAccess.Read);
            var len = (ulong)file.Length;
            using var s = Open(parse, socket, packed, "write");
            if (s.Driver.ReadOnly)
                throw new CliException("the device is read-only (VIRTIO_BLK_F_RO)");
            s.CheckRange(off, len, "write");
            var buffer = new byte[(int)Math.Min((ulong)Chunk, Math.Max(len, 1))];
            for (ulong done = 0; done < len;)
            {
                var n = (int)Math.Min((ulong)buffer.Length, len - done);
                await file.ReadExactlyAsync(buffer.AsMemory(0, n), ct);
                await s.Driver.WriteAsync(off + done, buffer.AsMemory(0, n), ct);
                done += (ulong)n;
            }
            stderr.WriteLine($"wrote {len} bytes at offset {off}");
            return 0;
        }));
        return cmd;
    }

    // ---------------------------------------------------------------- flush, discard, write-zeroes

    private static Command Flush(Option<string> socket, Option<bool> packed)
    {
        var cmd = new Command("flush", "Ask the device to make written data durable (VIRTIO_BLK_T_FLUSH)");
        cmd.SetAction((parse, ct) => CliErrors.RunAsync("io flush", parse.InvocationConfiguration.Error, async () =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            var stderr = parse.InvocationConfiguration.Error;
            using var s = Open(parse, socket, packed, "flush");
            if (!VirtioFeatures.Has(s.Driver.Features, BlkFeatures.Flush))
                throw new CliException("the device does not offer VIRTIO_BLK_F_FLUSH");
            await s.Driver.FlushAsync(ct);
            stderr.WriteLine("flushed");
            return 0;
        }));
        return cmd;
    }

    private static Command Ranged(string name, string description, Option<string> socket, Option<bool> packed, Func<FrontendSession, ulong, ulong, CancellationToken, ValueTask> run)
    {
        var offset = OffsetOption();
        var length = LengthOption();
        var cmd = new Command(name, description) { offset, length };
        cmd.SetAction((parse, ct) => CliErrors.RunAsync($"io {name}", parse.InvocationConfiguration.Error, async () =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            var stderr = parse.InvocationConfiguration.Error;
            var off = Sizes.Parse(parse.GetValue(offset)!, "--offset");
            var len = Sizes.Parse(parse.GetValue(length)!, "--length");
            using var s = Open(parse, socket, packed, name);
            s.CheckRange(off, len, name);
            await run(s, off, len, ct);
            stderr.WriteLine($"{name}: {len} bytes at offset {off} done");
            return 0;
        }));
        return cmd;
    }

    // ---------------------------------------------------------------- verify

    private static Command Verify(Option<string> socket, Option<bool> packed)
    {
        var offset = OffsetOption();
        var length = LengthOption();
        var seed = new Option<ulong>("--seed") { Description = "Seed of the data pattern", DefaultValueFactory = _ => 1 };
        var cmd = new Command("verify", "Write a seeded pattern, read it back and report the first mismatch") { offset, length, seed };
        cmd.SetAction((parse, ct) => CliErrors.RunAsync("io verify", parse.InvocationConfiguration.Error, async () =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            var stderr = parse.InvocationConfiguration.Error;
            var off = Sizes.Parse(parse.GetValue(offset)!, "--offset");
            var len = Sizes.Parse(parse.GetValue(length)!, "--length");
            var seedValue = parse.GetValue(seed);
            using var s = Open(parse, socket, packed, "verify");
            if (s.Driver.ReadOnly)
                throw new CliException("the device is read-only (VIRTIO_BLK_F_RO); verify needs to write");
            s.CheckRange(off, len, "verify");
            var size = (int)Math.Min((ulong)Chunk, Math.Max(len, 1));
            var expected = new byte[size];
            var actual = new byte[size];
            for (ulong done = 0; done < len;)
            {
                var n = (int)Math.Min((ulong)size, len - done);
                SeededPattern.Fill(expected.AsSpan(0, n), off + done, seedValue);
                await s.Driver.WriteAsync(off + done, expected.AsMemory(0, n), ct);
                done += (ulong)n;
            }
            for (ulong done = 0; done < len;)
            {
                var n = (int)Math.Min((ulong)size, len - done);
                SeededPattern.Fill(expected.AsSpan(0, n), off + done, seedValue);
                await s.Driver.ReadAsync(off + done, actual.AsMemory(0, n), ct);
                var at = expected.AsSpan(0, n).CommonPrefixLength(actual.AsSpan(0, n));
                if (at < n)
                {
                    var where = off + done + (ulong)at;
                    stderr.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"vblk io verify: mismatch at offset {where} (0x{where:x}): wrote 0x{expected[at]:x2}, read 0x{actual[at]:x2}"));
                    return 1;
                }
                done += (ulong)n;
            }
            stdout.WriteLine($"verified {len} bytes at offset {off} (seed {seedValue}): OK");
            return 0;
        }));
        return cmd;
    }
}

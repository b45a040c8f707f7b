using System.CommandLine;
using System.Diagnostics;
using VirtioSharp.Block;
using VirtioSharp.Cli.Explorer;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Machine;
using VirtioSharp.Queues;

namespace VirtioSharp.Cli.Commands;

/// <summary>`vblk demo`: the seed system end to end in one process, narrated.</summary>
public static class DemoCommand
{
    public static Command Create()
    {
        var disk = new Option<string?>("--disk") { Description = "Disk image to use. Created with --size if missing; an existing image is overwritten only with --overwrite. Default: a new image in a temporary folder." };
        var size = new Option<string>("--size") { Description = "Size of a disk image the demo creates (e.g. 64M, 1G).", DefaultValueFactory = _ => "64M" };
        var queueSize = new Option<int>("--queue-size") { Description = "Virtqueue size: a power of two, 4..32768 (with --packed any size in that range).", DefaultValueFactory = _ => 256 };
        var depth = new Option<int>("--depth") { Description = "Requests kept in flight at once by the workload.", DefaultValueFactory = _ => 32 };
        var trace = new Option<string>("--trace") { Description = "Narrate requests step by step: all, first or none.", DefaultValueFactory = _ => "first" };
        trace.AcceptOnlyFromAmong("all", "first", "none");
        var strict = StrictOption.Create();
        var overwrite = new Option<bool>("--overwrite") { Description = "Allow the demo to overwrite the contents of an existing --disk image." };
        var indirect = new Option<bool>("--indirect") { Description = "Let the driver use indirect descriptor tables (VIRTIO_F_INDIRECT_DESC): one ring descriptor per request." };
        var packed = new Option<bool>("--packed") { Description = "Use packed virtqueues (VIRTIO_F_RING_PACKED, spec 2.8) instead of split ones; any queue size from 4 to 32768." };
        var blockSize = new Option<string>("--block-size") { Description = "Bytes per request of the workload (multiple of 512).", DefaultValueFactory = _ => "64K" };
        var html = new Option<string?>("--html") { Description = "Write the run as a self-contained HTML page (the virtqueue explorer): the first request, or with --trace all the first --record-limit requests." };
        var record = new Option<string?>("--record") { Description = "Write the same recording as a file for vblk view (JSON lines)." };
        var recordLimit = new Option<int>("--record-limit") { Description = "Requests recorded with --trace all (1..100000).", DefaultValueFactory = _ => 200 };

        var command = new Command("demo", """
            Runs the seed system in one process: a virtio-blk device on the virtio-mmio bus of a simulated
            machine (guest RAM, a device I/O thread, an interrupt line with its own thread) and the C# driver.
            The first request is narrated in the spec's words; then a workload writes patterns, reads them
            back and verifies every byte, flushes, discards, zeroes and reads the device id.
            """);
        foreach (var o in new Option[] { disk, size, queueSize, depth, trace, strict, overwrite, blockSize, indirect, html, record, recordLimit, packed })
            command.Options.Add(o);
        command.SetAction(async (parse, cancel) =>
        {
            var settings = new DemoSettings(
                parse.GetValue(disk),
                Sizes.Parse(parse.GetValue(size)!, "--size"),
                parse.GetValue(queueSize),
                parse.GetValue(depth),
                parse.GetValue(trace)!,
                StrictOption.Parse(parse, strict),
                parse.GetValue(overwrite),
                Sizes.Parse(parse.GetValue(blockSize)!, "--block-size"),
                parse.GetValue(indirect),
                parse.GetValue(html),
                parse.GetValue(record),
                parse.GetValue(recordLimit),
                parse.GetValue(packed));
            return await RunAsync(settings, cancel);
        });
        return command;
    }

    private sealed record DemoSettings(string? Disk, ulong Size, int QueueSize, int Depth, string Trace, StrictMode Strict, bool Overwrite, ulong BlockSize, bool Indirect,
        string? Html = null, string? Record = null, int RecordLimit = 200, bool Packed = false)
    {
        public bool Recording => Html is not null || Record is not null;
        /// <summary>Requests recorded: the narrated one, or with --trace all the first --record-limit.</summary>
        public int RequestsRecorded => Trace == "all" ? RecordLimit : 1;
    }

    private static void Check(DemoSettings s)
    {
        if (s.Packed ? !PackedRing.IsValidSize(s.QueueSize) || s.QueueSize < 4 : !SplitRing.IsValidSize(s.QueueSize) || s.QueueSize < 4)
            throw new CliException(s.Packed ? $"--queue-size must be from 4 to 32768, not {s.QueueSize}" : $"--queue-size must be a power of two from 4 to 32768, not {s.QueueSize}", true);
        var maxDepth = s.Indirect ? s.QueueSize : s.QueueSize / 3;
        if (s.Depth < 1 || s.Depth > maxDepth)
            throw new CliException($"--depth must be from 1 to {maxDepth} ({(s.Indirect ? "the queue size" : "a third of the queue size: three descriptors per request")}), not {s.Depth}", true);
        if (s.BlockSize == 0 || s.BlockSize % BlkLayout.SectorSize != 0 || s.BlockSize > 4 << 20)
            throw new CliException($"--block-size must be a multiple of 512 up to 4M, not {s.BlockSize}", true);
        if (s.Size < 1 << 20 || s.Size % BlkLayout.SectorSize != 0)
            throw new CliException($"--size must be at least 1M and a multiple of 512, not {s.Size}", true);
        if (s.RecordLimit is < 1 or > 100_000)
            throw new CliException($"--record-limit must be from 1 to 100000, not {s.RecordLimit}", true);
        foreach (var (file, name) in new[] { (s.Html, "--html"), (s.Record, "--record") })
        {
            var dir = file is null ? null : Path.GetDirectoryName(Path.GetFullPath(file));
            if (dir is not null && !Directory.Exists(dir))
                throw new CliException($"{name}: folder '{dir}' does not exist", true);
        }
    }

    private static async Task<int> RunAsync(DemoSettings s, CancellationToken cancel)
    {
        Check(s);
        string? tempDir = null;
        var path = s.Disk;
        if (path is null)
        {
            tempDir = Directory.CreateTempSubdirectory("vblk-demo-").FullName;
            path = Path.Combine(tempDir, "disk.img");
        }
        try
        {
            if (File.Exists(path))
            {
                if (new FileInfo(path).Length > 0 && !s.Overwrite)
                    throw new CliException($"'{path}' exists and the demo writes over it; pass --overwrite to allow that", true);
            }
            else
            {
                var dir = Path.GetDirectoryName(Path.GetFullPath(path));
                if (dir is not null && !Directory.Exists(dir))
                    throw new CliException($"folder '{dir}' does not exist");
                FileBackend.Create(path, s.Size);
            }
            return await RunMachineAsync(s, path, cancel);
        }
        finally
        {
            if (tempDir is not null)
                Directory.Delete(tempDir, recursive: true);
        }
    }

    private static async Task<int> RunMachineAsync(DemoSettings s, string path, CancellationToken cancel)
    {
        var log = new ConsoleLogSink(LogLevel.Warning);
        // The console narrates from the first request on; a recording also keeps the start-up (registers, queue setup).
        var console = new ConsoleTrace(false);
        var info = new RecordingInfo("vblk demo", "virtio-mmio", DateTime.UtcNow, s.RequestsRecorded, VirtioMachine.MmioBase);
        using var file = s.Record is null ? null : new RecordingWriter(File.Create(s.Record), info);
        var recorder = s.Recording ? new RingRecorder(new RingRecorderOptions { MaxRequests = s.RequestsRecorded, Inner = console, Writer = file, Keep = s.Html is not null }) : null;
        ITraceSink? trace = recorder is not null ? recorder : s.Trace != "none" ? console : null;
        using var backend = FileBackend.Open(path);
        // The device's QueueNumMax is a power of two; a packed ring may be any size below it (2.8.10.1).
        var deviceQueueSize = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)s.QueueSize);
        var device = new BlkDevice(backend, new BlkDeviceOptions { QueueSize = deviceQueueSize, Log = log, Trace = trace, Strict = s.Strict, Serial = "vblk-demo" });
        if (recorder is not null)
            device.Breaches.Observer = recorder.Breach;
        var transfer = (int)Math.Max(s.BlockSize, 4096);
        using var machine = new VirtioMachine(device, VirtioMachine.RamFor(1, deviceQueueSize, transfer), trace);

        Console.WriteLine($"vblk demo: {Sizes.Format(backend.Capacity)} disk image {path}");
        Console.WriteLine($"machine: guest RAM {Sizes.Format(machine.Ram.Size)} at 0x{machine.Ram.Base:x}, virtio-mmio device (ID 2, version 2) at 0x{VirtioMachine.MmioBase:x}, queue size {s.QueueSize}{(s.Packed ? ", packed virtqueue (2.8)" : "")}");
        Console.WriteLine();
        using var driver = BlkDriver.Start(machine.CreateDriverTransport(), new BlkDriverOptions
        {
            QueueSize = s.QueueSize,
            MaxTransfer = transfer,
            Trace = trace,
            Log = log,
            Ring = s.Packed ? RingChoice.RequirePacked : RingChoice.Split,
            // The seeds' three chained descriptors, unless asked for indirect tables.
            AcceptFeatures = s.Indirect ? BlkDriver.SupportedFeatures : BlkDriver.SupportedFeatures & ~VirtioFeatures.Bit(VirtioFeatures.RingIndirectDesc),
        });
        Console.WriteLine($"driver: features {BlkFeatures.Describe(driver.Features)}");
        Console.WriteLine($"driver: capacity {driver.Config.Capacity} sectors, blk_size {driver.BlockSize}, seg_max {driver.Config.SegMax}, {driver.Depth} requests in flight at most");
        Console.WriteLine();

        // The seeds' first request: read one block from the disk.
        console.Active = s.Trace != "none";
        if (console.Active)
            Console.WriteLine(s.Packed
                ? "First request, step by step (read sector 0, 512 bytes), on a packed ring: one zeroed descriptor ring shared both ways, both wrap counters at 1 (2.8.1):"
                : "First request, step by step (read sector 0, 512 bytes):");
        var first = new byte[BlkLayout.SectorSize];
        await driver.ReadAsync(0, first, cancel);
        if (s.Trace == "first")
            console.Active = false;
        Console.WriteLine();

        var workload = new DemoWorkload(driver, s.Depth, (int)s.BlockSize, seed: 0x5eed);
        var clock = Stopwatch.StartNew();
        var result = await workload.RunAsync(cancel);
        clock.Stop();

        PrintSummary(device, result, clock.Elapsed, machine);
        if (recorder is not null)
            WriteRecording(s, recorder, info);
        if (device.Breaches.Total > 0 || s.Strict != StrictMode.Off)
            Console.WriteLine(device.Breaches.Summary());
        return result.Mismatches == 0 && result.Failures == 0 ? 0 : CliRunner.Failure;
    }

    private static void WriteRecording(DemoSettings s, RingRecorder recorder, RecordingInfo info)
    {
        recorder.Finish("the demo ended");
        if (s.Html is not null)
        {
            var events = recorder.Events;
            ExplorerPage.Write(s.Html, ExplorerPage.Render(info, events, recorder.StopReason ?? "the demo ended", recorder.Dropped));
            Console.WriteLine($"  explorer     {s.Html} ({events.Count} steps, {Math.Min(recorder.Requests, s.RequestsRecorded)} requests; open it in a browser)");
        }
        if (s.Record is not null)
            Console.WriteLine($"  recording    {s.Record} (render it with: vblk view {s.Record} --html OUT)");
    }

    private static void PrintSummary(BlkDevice device, DemoWorkload.Result r, TimeSpan elapsed, VirtioMachine machine)
    {
        var st = device.Stats;
        Console.WriteLine("Summary");
        Console.WriteLine($"  requests     IN {st.Requests(BlkRequestType.In)}, OUT {st.Requests(BlkRequestType.Out)}, FLUSH {st.Requests(BlkRequestType.Flush)}, DISCARD {st.Requests(BlkRequestType.Discard)}, WRITE_ZEROES {st.Requests(BlkRequestType.WriteZeroes)}, GET_ID {st.Requests(BlkRequestType.GetId)} ({st.Total} in all)");
        Console.WriteLine($"  bytes        written {Sizes.Format(st.BytesWritten)}, read {Sizes.Format(st.BytesRead)}");
        Console.WriteLine($"  verified     {Sizes.Format(r.VerifiedBytes)} read back: {(r.Mismatches == 0 ? "every byte OK" : $"{r.Mismatches} MISMATCHED blocks, first at offset {r.FirstMismatch}")}; zeroed range reads zeroes: {(r.ZeroesOk ? "OK" : "FAILED")}");
        Console.WriteLine($"  device id    \"{r.DeviceId}\"");
        Console.WriteLine($"  errors       IOERR {st.IoErrors}, UNSUPP {st.Unsupported}, malformed {st.Malformed}, failed calls {r.Failures}");
        Console.WriteLine($"  interrupts   {machine.Irq.Delivered} handled; device I/O threads woke {machine.IoWakeups} times");
        Console.WriteLine($"  elapsed      {elapsed.TotalSeconds:0.000} s, {r.Requests / Math.Max(elapsed.TotalSeconds, 1e-9):0} requests/s, {r.Bytes / Math.Max(elapsed.TotalSeconds, 1e-9) / (1 << 20):0.0} MiB/s");
    }
}

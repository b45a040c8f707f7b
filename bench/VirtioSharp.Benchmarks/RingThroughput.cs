using System.Diagnostics;
using System.Globalization;
using VirtioSharp.Memory;
using VirtioSharp.Native;
using VirtioSharp.Queues;

namespace VirtioSharp.Benchmarks;

/// <summary>
/// Two threads, one ring: the driver half (<see cref="IDriverQueue"/>) on one core makes
/// one-descriptor buffers available, the device half (<see cref="IDeviceQueue"/>) on the other
/// takes each one, returns it as used, and the driver reclaims it. Both poll; notifications and
/// interrupts are turned off, as a polling device and driver turn them off. Prints buffers per
/// second for a fixed number of buffers, timed from the start of both threads to the end of both.
/// The shape follows Linux's tools/virtio/ringtest, so its models can run beside it.
/// </summary>
public static class RingThroughput
{
    private const string Usage = """
        Usage: VirtioSharp.Benchmarks ring [options]
          --format split|packed   ring format (default split)
          --batch N               buffers the driver adds before one Publish, and chains the
                                  device takes before one PublishUsed (default 1)
          --buffers N             buffers passed through the ring per timed run (default 10000000)
          --ring-size N           queue size (default 256)
          --runs N                timed runs, one result line each (default 1)
          --warmup N              buffers passed before timing, so the JIT has tiered up (default 3000000)
          --no-event-idx          run without VIRTIO_F_EVENT_IDX (default: negotiated)
          --driver-cpu N          pin the driver thread to CPU N (default 0; -1: no pinning)
          --device-cpu N          pin the device thread to CPU N (default 1; -1: no pinning)
          --help                  this text
        Output: one line per run: format, batch, buffers, seconds, buffers per second.
        """;

    public static int Run(string[] args)
    {
        var format = VirtqueueFormat.Split;
        int batch = 1, ringSize = 256, runs = 1, driverCpu = 0, deviceCpu = 1;
        long buffers = 10_000_000, warmup = 3_000_000;
        var eventIdx = true;
        for (var i = 0; i < args.Length; i++)
        {
            var a = args[i];
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{a} needs a value");
            try
            {
                switch (a)
                {
                    case "--help" or "-h":
                        Console.WriteLine(Usage);
                        return 0;
                    case "--format":
                        format = Next() switch
                        {
                            "split" => VirtqueueFormat.Split,
                            "packed" => VirtqueueFormat.Packed,
                            var f => throw new ArgumentException($"--format {f}: split or packed"),
                        };
                        break;
                    case "--batch": batch = Positive(a, Next()); break;
                    case "--buffers": buffers = Positive(a, Next()); break;
                    case "--ring-size": ringSize = Positive(a, Next()); break;
                    case "--runs": runs = Positive(a, Next()); break;
                    case "--warmup": warmup = long.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--no-event-idx": eventIdx = false; break;
                    case "--driver-cpu": driverCpu = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--device-cpu": deviceCpu = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    default: throw new ArgumentException($"unknown option {a} (see --help)");
                }
            }
            catch (Exception e) when (e is ArgumentException or FormatException or OverflowException)
            {
                Console.Error.WriteLine($"ring: {e.Message}");
                return 2;
            }
        }
        var sizeOk = format == VirtqueueFormat.Split ? SplitRing.IsValidSize(ringSize) : PackedRing.IsValidSize(ringSize);
        if (!sizeOk)
        {
            Console.Error.WriteLine($"ring: --ring-size {ringSize} is not a valid {format.ToString().ToLowerInvariant()} queue size");
            return 2;
        }

        var run = new RingPass(format, ringSize, batch, eventIdx, driverCpu, deviceCpu);
        string? error;
        if (warmup > 0)
        {
            // Tiered compilation: the hot methods are promoted after their first calls, in the background.
            for (var w = 0; w < 3; w++)
            {
                if (run.Pass(warmup / 3, out _, out error) is null)
                    return Fail(error);
                Thread.Sleep(200);
            }
        }
        for (var r = 0; r < runs; r++)
        {
            var seconds = run.Pass(buffers, out var checkedBuffers, out error);
            if (seconds is not { } s)
                return Fail(error);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"format={format.ToString().ToLowerInvariant()} batch={batch} ring={ringSize} buffers={checkedBuffers} seconds={s:F3} buffers_per_second={checkedBuffers / s:F0}"));
        }
        return 0;
    }

    private static int Fail(string? error)
    {
        Console.Error.WriteLine($"ring: {error}");
        return 1;
    }

    private static int Positive(string option, string value)
    {
        var n = int.Parse(value, CultureInfo.InvariantCulture);
        return n > 0 ? n : throw new ArgumentException($"{option} must be positive");
    }

    /// <summary>One configuration: a fresh ring in fresh guest RAM per pass.</summary>
    private sealed class RingPass(VirtqueueFormat format, int ringSize, int batch, bool eventIdx, int driverCpu, int deviceCpu)
    {
        /// <summary>Passes <paramref name="buffers"/> through a new ring; the seconds it took, or null with an error.</summary>
        public double? Pass(long buffers, out long completed, out string? error)
        {
            completed = 0;
            using var ram = new GuestRam(0, 4 << 20);
            var alloc = new GuestAllocator(ram.Memory, 0, ram.Size);
            IDriverQueue driver;
            IDeviceQueue? device;
            if (format == VirtqueueFormat.Split)
            {
                var d = SplitDriverQueue.Allocate(0, ringSize, alloc, eventIdx);
                driver = d;
                device = SplitDeviceQueue.Create(0, ringSize, ram.Memory, d.DescriptorTable, d.DriverArea, d.DeviceArea, eventIdx, indirect: true, out error);
            }
            else
            {
                var d = PackedDriverQueue.Allocate(0, ringSize, alloc, eventIdx);
                driver = d;
                device = PackedDeviceQueue.Create(0, ringSize, ram.Memory, d.DescriptorTable, d.DriverArea, d.DeviceArea, eventIdx, indirect: true, out error);
            }
            if (device is null)
                return null;
            // The buffer every request offers: one device-writable descriptor, as ringtest's add_inbuf.
            var buffer = new DriverBuffer[] { new(alloc.Allocate(4096, 4096), 4096, true) };

            var start = new ManualResetEventSlim();
            string? driverError = null, deviceError = null;
            long driverDone = 0, deviceDone = 0;
            var driverThread = new Thread(() =>
            {
                if (driverCpu >= 0 && !ThreadAffinity.TryPinCurrentThread(driverCpu, out driverError))
                    return;
                start.Wait();
                driverDone = DriveLoop(driver, buffer, buffers, batch, out driverError);
            })
            {
                Name = "ring driver",
                IsBackground = true,
            };
            var deviceThread = new Thread(() =>
            {
                if (deviceCpu >= 0 && !ThreadAffinity.TryPinCurrentThread(deviceCpu, out deviceError))
                    return;
                start.Wait();
                deviceDone = DeviceLoop(device, buffers, batch, out deviceError);
            })
            {
                Name = "ring device",
                IsBackground = true,
            };
            driverThread.Start();
            deviceThread.Start();
            Thread.Sleep(50); // both threads pinned and waiting
            var clock = Stopwatch.StartNew();
            start.Set();
            driverThread.Join();
            deviceThread.Join();
            clock.Stop();
            error = driverError ?? deviceError;
            if (error is not null)
                return null;
            if (driverDone != buffers || deviceDone != buffers)
            {
                error = $"driver reclaimed {driverDone} and device used {deviceDone} of {buffers} buffers";
                return null;
            }
            completed = buffers;
            return clock.Elapsed.TotalSeconds;
        }
    }

    /// <summary>The driver: add up to a batch, publish once, reclaim what the device used; until every buffer came back.</summary>
    private static long DriveLoop(IDriverQueue driver, DriverBuffer[] buffer, long total, int batch, out string? error)
    {
        error = null;
        driver.DisableInterrupts(); // a polling driver
        long added = 0, reclaimed = 0;
        while (reclaimed < total)
        {
            var step = DriverStep(driver, buffer, batch, total - added, out var taken, out error);
            if (error is not null)
                return reclaimed;
            added += step;
            reclaimed += taken;
        }
        return reclaimed;
    }

    private static int DriverStep(IDriverQueue driver, DriverBuffer[] buffer, int batch, long left, out int taken, out string? error)
    {
        error = null;
        var n = 0;
        var want = (int)Math.Min(batch, left);
        while (n < want && driver.TryAdd(buffer, out _))
            n++;
        if (n > 0)
            driver.Publish(); // no notification is sent: the device polls
        taken = 0;
        UsedError usedError;
        while (driver.TryTakeUsed(out _, out _, out usedError))
            taken++;
        if (usedError != UsedError.None)
            error = $"driver: {usedError}";
        return n;
    }

    /// <summary>The device: take up to a batch, return each as used, publish once; until every buffer went through.</summary>
    private static long DeviceLoop(IDeviceQueue device, long total, int batch, out string? error)
    {
        error = null;
        device.DisableNotifications(); // a polling device
        long used = 0;
        while (used < total)
        {
            var n = DeviceStep(device, batch, out error);
            if (error is not null)
                return used;
            used += n;
        }
        return used;
    }

    private static int DeviceStep(IDeviceQueue device, int batch, out string? error)
    {
        error = null;
        var n = 0;
        PopResult result = PopResult.Empty;
        while (n < batch && (result = device.TryPop(out var chain)) == PopResult.Chain)
        {
            device.AddUsed(chain.Head, chain.Buffers[0].Length); // as if the whole buffer was written
            n++;
        }
        if (result == PopResult.RingCorrupt)
            error = $"device: {device.LastRingError} ({device.LastRingErrorValue})";
        if (n > 0)
            device.PublishUsed(); // the interrupt it may ask for is not sent: the driver polls
        return n;
    }
}

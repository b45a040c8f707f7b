using System.Diagnostics;
using System.Globalization;
using VirtioSharp.Memory;
using VirtioSharp.Native;
using VirtioSharp.Queues;

namespace VirtioSharp.Benchmarks;

/// <summary>
/// Two threads, one ring: the driver half (<see cref="SplitDriverQueue"/>, <see cref="PackedDriverQueue"/>) on one core makes
/// one-descriptor buffers available, the device half (<see cref="SplitDeviceQueue"/>, <see cref="PackedDeviceQueue"/>) on the other
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
          --decide                each Publish and PublishUsed decides on a notification or an
                                  interrupt, with the full barrier before reading the other side's
                                  suppression state (2.7.13.4, 2.7.7.2, 2.8.21.3.1), as a half that
                                  does not know its peer polls; by default neither decides, as
                                  ringtest's polling mode never kicks nor calls
          --single-thread         one thread alternates the driver's step and the device's step
                                  (no polling, no cache line moving between cores): the queue code's
                                  own path, for counting instructions per buffer
          --driver-cpu N          pin the driver thread to CPU N (default 0; -1: no pinning)
          --device-cpu N          pin the device thread to CPU N (default 1; -1: no pinning)
          --help                  this text
        Output: one line per run: format, batch, ring size, decide, threads, buffers, seconds,
        buffers per second, and the process's CPU time per buffer (both threads' when two run).
        """;

    public static int Run(string[] args)
    {
        var format = VirtqueueFormat.Split;
        int batch = 1, ringSize = 256, runs = 1, driverCpu = 0, deviceCpu = 1;
        long buffers = 10_000_000, warmup = 3_000_000;
        bool eventIdx = true, decide = false, singleThread = false;
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
                    case "--decide": decide = true; break;
                    case "--single-thread": singleThread = true; break;
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

        var run = new RingPass(format, ringSize, batch, eventIdx, decide, singleThread, driverCpu, deviceCpu);
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
            var cpuBefore = Environment.CpuUsage.TotalTime;
            var seconds = run.Pass(buffers, out var checkedBuffers, out error);
            var cpu = (Environment.CpuUsage.TotalTime - cpuBefore).TotalSeconds;
            if (seconds is not { } s)
                return Fail(error);
            // CPU time of the whole process over the pass: with --single-thread, the one thread's
            // time per buffer, which a loaded machine inflates far less than the wall clock.
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"format={format.ToString().ToLowerInvariant()} batch={batch} ring={ringSize} decide={(decide ? 1 : 0)} threads={(singleThread ? 1 : 2)} buffers={checkedBuffers} seconds={s:F3} buffers_per_second={checkedBuffers / s:F0} cpu_ns_per_buffer={cpu * 1e9 / checkedBuffers:F1}"));
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
    private sealed class RingPass(VirtqueueFormat format, int ringSize, int batch, bool eventIdx, bool decide, bool singleThread, int driverCpu, int deviceCpu)
    {
        /// <summary>Passes <paramref name="buffers"/> through a new ring; the seconds it took, or null with an error.</summary>
        public double? Pass(long buffers, out long completed, out string? error)
        {
            completed = 0;
            using var ram = new GuestRam(0, 4 << 20);
            var alloc = new GuestAllocator(ram.Memory, 0, ram.Size);
            // The buffer every request offers: one device-writable descriptor, as ringtest's add_inbuf.
            // Allocated first, so the two halves' objects follow each other.
            var buffer = new DriverBuffer[] { new(alloc.Allocate(4096, 4096), 4096, true) };
            // The loops are generic over the sealed queue types (through struct adapters), so the
            // JIT calls each queue method directly and may inline it: no interface dispatch per buffer.
            if (format == VirtqueueFormat.Split)
            {
                var d = SplitDriverQueue.Allocate(0, ringSize, alloc, eventIdx);
                var device = SplitDeviceQueue.Create(0, ringSize, ram.Memory, d.DescriptorTable, d.DriverArea, d.DeviceArea, eventIdx, indirect: true, out error);
                return device is null ? null : Run(new SplitDriver(d), new SplitDevice(device), buffer, buffers, out completed, out error);
            }
            else
            {
                var d = PackedDriverQueue.Allocate(0, ringSize, alloc, eventIdx);
                var device = PackedDeviceQueue.Create(0, ringSize, ram.Memory, d.DescriptorTable, d.DriverArea, d.DeviceArea, eventIdx, indirect: true, out error);
                return device is null ? null : Run(new PackedDriver(d), new PackedDevice(device), buffer, buffers, out completed, out error);
            }
        }

        private double? Run<TDriver, TDevice>(TDriver driver, TDevice device, DriverBuffer[] buffer, long buffers, out long completed, out string? error)
            where TDriver : struct, IDriverSide
            where TDevice : struct, IDeviceSide
        {
            completed = 0;
            string? driverError = null, deviceError = null;
            long driverDone = 0, deviceDone = 0;
            if (singleThread)
            {
                if (driverCpu >= 0 && !ThreadAffinity.TryPinCurrentThread(driverCpu, out error))
                    return null;
                var watch = Stopwatch.StartNew();
                driverDone = deviceDone = AlternateLoop(driver, device, buffer, buffers, batch, decide, out error);
                watch.Stop();
                if (error is not null)
                    return null;
                completed = buffers;
                return watch.Elapsed.TotalSeconds;
            }

            var start = new ManualResetEventSlim();
            var driverThread = new Thread(() =>
            {
                if (driverCpu >= 0 && !ThreadAffinity.TryPinCurrentThread(driverCpu, out driverError))
                    return;
                start.Wait();
                driverDone = DriveLoop(driver, buffer, buffers, batch, decide, out driverError);
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
                deviceDone = DeviceLoop(device, buffers, batch, decide, out deviceError);
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

    /// <summary>The driver half's calls the loops make, implemented by struct adapters over the sealed queue types.</summary>
    private interface IDriverSide
    {
        void DisableInterrupts();
        bool TryAdd(ReadOnlySpan<DriverBuffer> buffers);
        void Publish(bool decide);
        bool TryTakeUsed(out UsedError error);
    }

    /// <summary>The device half's calls the loops make.</summary>
    private interface IDeviceSide
    {
        void DisableNotifications();
        /// <summary>Takes one chain and returns it as used at once (as if its whole buffer was written).</summary>
        PopResult TakeAndReturn();
        void PublishUsed(bool decide);
        string RingError { get; }
    }

    private readonly struct SplitDriver(SplitDriverQueue q) : IDriverSide
    {
        public void DisableInterrupts() => q.DisableInterrupts();
        public bool TryAdd(ReadOnlySpan<DriverBuffer> buffers) => q.TryAdd(buffers, out _);
        public void Publish(bool decide)
        {
            if (decide)
                q.Publish(); // the notification it may ask for is not sent: the device polls
            else
                q.PublishForPoller();
        }
        public bool TryTakeUsed(out UsedError error) => q.TryTakeUsed(out _, out _, out error);
    }

    private readonly struct PackedDriver(PackedDriverQueue q) : IDriverSide
    {
        public void DisableInterrupts() => q.DisableInterrupts();
        public bool TryAdd(ReadOnlySpan<DriverBuffer> buffers) => q.TryAdd(buffers, out _);
        public void Publish(bool decide)
        {
            if (decide)
                q.Publish();
            else
                q.PublishForPoller();
        }
        public bool TryTakeUsed(out UsedError error) => q.TryTakeUsed(out _, out _, out error);
    }

    private readonly struct SplitDevice(SplitDeviceQueue q) : IDeviceSide
    {
        public void DisableNotifications() => q.DisableNotifications();
        public PopResult TakeAndReturn()
        {
            var result = q.TryPop(out var chain);
            if (result == PopResult.Chain)
                q.AddUsedToBatch(chain.Head, chain.Buffers[0].Length); // as QueueDrainer: published with the batch
            return result;
        }
        public void PublishUsed(bool decide)
        {
            if (decide)
                q.PublishUsed(); // the interrupt it may ask for is not sent: the driver polls
            else
                q.PublishUsedForPoller();
        }
        public string RingError => $"{q.LastRingError} ({q.LastRingErrorValue})";
    }

    private readonly struct PackedDevice(PackedDeviceQueue q) : IDeviceSide
    {
        public void DisableNotifications() => q.DisableNotifications();
        public PopResult TakeAndReturn()
        {
            var result = q.TryPop(out var chain);
            if (result == PopResult.Chain)
                q.AddUsedToBatch(chain.Head, chain.Buffers[0].Length); // as QueueDrainer: published with the batch
            return result;
        }
        public void PublishUsed(bool decide)
        {
            if (decide)
                q.PublishUsed();
            else
                q.PublishUsedForPoller();
        }
        public string RingError => $"{q.LastRingError} ({q.LastRingErrorValue})";
    }

    /// <summary>The driver: add up to a batch, publish once, reclaim what the device used; until every buffer came back.</summary>
    private static long DriveLoop<TDriver>(TDriver driver, DriverBuffer[] buffer, long total, int batch, bool decide, out string? error)
        where TDriver : struct, IDriverSide
    {
        error = null;
        driver.DisableInterrupts(); // a polling driver
        long added = 0, reclaimed = 0;
        while (reclaimed < total)
        {
            added += DriverStep(driver, buffer, batch, total - added, decide, out var taken, out error);
            if (error is not null)
                return reclaimed;
            reclaimed += taken;
        }
        return reclaimed;
    }

    private static int DriverStep<TDriver>(TDriver driver, DriverBuffer[] buffer, int batch, long left, bool decide, out int taken, out string? error)
        where TDriver : struct, IDriverSide
    {
        error = null;
        var n = 0;
        var want = (int)Math.Min(batch, left);
        while (n < want && driver.TryAdd(buffer))
            n++;
        if (n > 0)
            driver.Publish(decide);
        taken = 0;
        UsedError usedError;
        while (driver.TryTakeUsed(out usedError))
            taken++;
        if (usedError != UsedError.None)
            error = $"driver: {usedError}";
        return n;
    }

    /// <summary>The device: take up to a batch, return each as used, publish once; until every buffer went through.</summary>
    private static long DeviceLoop<TDevice>(TDevice device, long total, int batch, bool decide, out string? error)
        where TDevice : struct, IDeviceSide
    {
        error = null;
        device.DisableNotifications(); // a polling device
        long used = 0;
        while (used < total)
        {
            used += DeviceStep(device, batch, decide, out error);
            if (error is not null)
                return used;
        }
        return used;
    }

    private static int DeviceStep<TDevice>(TDevice device, int batch, bool decide, out string? error)
        where TDevice : struct, IDeviceSide
    {
        error = null;
        var n = 0;
        var result = PopResult.Empty;
        while (n < batch && (result = device.TakeAndReturn()) == PopResult.Chain)
            n++;
        if (result == PopResult.RingCorrupt)
            error = $"device: {device.RingError}";
        if (n > 0)
            device.PublishUsed(decide);
        return n;
    }

    /// <summary>Both halves on one thread: a driver step (add, publish, reap), then a device step, until every buffer came back.</summary>
    private static long AlternateLoop<TDriver, TDevice>(TDriver driver, TDevice device, DriverBuffer[] buffer, long total, int batch, bool decide, out string? error)
        where TDriver : struct, IDriverSide
        where TDevice : struct, IDeviceSide
    {
        driver.DisableInterrupts();
        device.DisableNotifications();
        long added = 0, reclaimed = 0;
        while (reclaimed < total)
        {
            added += DriverStep(driver, buffer, batch, total - added, decide, out var taken, out error);
            reclaimed += taken;
            if (error is null)
                DeviceStep(device, batch, decide, out error);
            if (error is not null)
                return reclaimed;
        }
        error = null;
        return reclaimed;
    }
}

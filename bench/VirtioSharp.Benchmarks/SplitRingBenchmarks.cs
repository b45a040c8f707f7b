using BenchmarkDotNet.Attributes;
using VirtioSharp.Memory;
using VirtioSharp.Queues;

namespace VirtioSharp.Benchmarks;

/// <summary>
/// Question: what does one request cost in the split ring alone? The driver half places a
/// three-descriptor chain and publishes it, the device half takes it, walks it and returns it,
/// the driver reclaims it. No threads, no I/O: the ring protocol only.
/// </summary>
[MemoryDiagnoser]
public class SplitRingBenchmarks
{
    private GuestRam _ram = null!;
    private SplitDriverQueue _driver = null!;
    private SplitDeviceQueue _device = null!;
    private DriverBuffer[] _chain = null!;

    [Params(256)]
    public int QueueSize { get; set; }

    [Params(false, true)]
    public bool EventIdx { get; set; }

    [Params(1, 32)]
    public int Batch { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _ram = new GuestRam(0, 4 << 20);
        var alloc = new GuestAllocator(_ram.Memory, 0, _ram.Size);
        _driver = SplitDriverQueue.Allocate(0, QueueSize, alloc, EventIdx);
        _device = SplitDeviceQueue.Create(0, QueueSize, _ram.Memory, _driver.DescriptorTable, _driver.DriverArea, _driver.DeviceArea, EventIdx, true, out _)!;
        var header = alloc.Allocate(16);
        var data = alloc.Allocate(4096, 4096);
        var status = alloc.Allocate(1);
        _chain = [new(header, 16, false), new(data, 4096, true), new(status, 1, true)];
    }

    [GlobalCleanup]
    public void Cleanup() => _ram.Dispose();

    [Benchmark(Description = "requests through the ring (per batch)")]
    public int RoundTrip()
    {
        for (var i = 0; i < Batch; i++)
            _driver.TryAdd(_chain, out _);
        _driver.Publish();
        var n = 0;
        while (_device.TryPop(out var chain) == PopResult.Chain)
        {
            _device.AddUsed(chain.Head, 4097);
            n++;
        }
        _device.PublishUsed();
        while (_driver.TryTakeUsed(out _, out _, out _))
            n++;
        return n;
    }
}

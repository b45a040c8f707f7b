using BenchmarkDotNet.Attributes;
using VirtioSharp.Memory;
using VirtioSharp.Queues;

namespace VirtioSharp.Benchmarks;

/// <summary>
/// Question: what does one request cost, and allocate, in each ring format's per-request path?
/// Through the interfaces the block driver and device use: the driver adds a
/// header/data/status chain and publishes, the device takes it, returns it and publishes the
/// used batch, the driver reaps it. 32 requests per invocation, published every
/// <see cref="Batch"/>; Mean and Allocated are per request. One thread, no I/O.
/// </summary>
[MemoryDiagnoser]
public class RingRequestBenchmarks
{
    private const int Requests = 32;
    private GuestRam _ram = null!;
    private IDriverQueue _driver = null!;
    private IDeviceQueue _device = null!;
    private DriverBuffer[] _chain = null!;

    [Params(VirtqueueFormat.Split, VirtqueueFormat.Packed)]
    public VirtqueueFormat Format { get; set; }

    [Params(1, 32)]
    public int Batch { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        const int size = 256;
        _ram = new GuestRam(0, 4 << 20);
        var alloc = new GuestAllocator(_ram.Memory, 0, _ram.Size);
        if (Format == VirtqueueFormat.Split)
        {
            var d = SplitDriverQueue.Allocate(0, size, alloc, eventIdx: true);
            _driver = d;
            _device = SplitDeviceQueue.Create(0, size, _ram.Memory, d.DescriptorTable, d.DriverArea, d.DeviceArea, true, true, out _)!;
        }
        else
        {
            var d = PackedDriverQueue.Allocate(0, size, alloc, eventIdx: true);
            _driver = d;
            _device = PackedDeviceQueue.Create(0, size, _ram.Memory, d.DescriptorTable, d.DriverArea, d.DeviceArea, true, true, out _)!;
        }
        var header = alloc.Allocate(16);
        var data = alloc.Allocate(4096, 4096);
        var status = alloc.Allocate(1);
        _chain = [new(header, 16, false), new(data, 4096, true), new(status, 1, true)];
    }

    [GlobalCleanup]
    public void Cleanup() => _ram.Dispose();

    [Benchmark(Description = "request through the ring", OperationsPerInvoke = Requests)]
    public int Request()
    {
        var n = 0;
        for (var done = 0; done < Requests; done += Batch)
        {
            for (var i = 0; i < Batch; i++)
                _driver.TryAdd(_chain, out _);
            _driver.Publish();
            while (_device.TryPop(out var chain) == PopResult.Chain)
                _device.AddUsedToBatch(chain.Head, 4097); // as the drain loop returns chains
            _device.PublishUsed();
            while (_driver.TryTakeUsed(out _, out _, out _))
                n++;
        }
        return n;
    }
}

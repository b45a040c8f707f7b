using BenchmarkDotNet.Attributes;
using VirtioSharp.Block;
using VirtioSharp.Memory;
using VirtioSharp.Queues;

namespace VirtioSharp.Benchmarks;

/// <summary>
/// Question: what does the device spend per request, from taking the chain to the used ring,
/// on a null backend (the stack's own cost) and a memory backend (plus a copy)?
/// Allocated bytes must read 0: the hot path allocates nothing.
/// </summary>
[MemoryDiagnoser]
public class BlkDeviceBenchmarks
{
    private GuestRam _ram = null!;
    private SplitDriverQueue _driver = null!;
    private SplitDeviceQueue _queue = null!;
    private BlkDevice _device = null!;
    private IBlockBackend _backend = null!;
    private DriverBuffer[] _chain = null!;

    [Params("null", "memory")]
    public string Backend { get; set; } = "null";

    [Params(4096, 131072)]
    public int BlockSize { get; set; }

    private const int Batch = 32;

    [GlobalSetup]
    public void Setup()
    {
        _ram = new GuestRam(0, 8 << 20);
        var alloc = new GuestAllocator(_ram.Memory, 0, _ram.Size);
        _backend = Backend == "null" ? new NullBackend(64 << 20) : new MemoryBackend(64 << 20);
        _device = new BlkDevice(_backend, new BlkDeviceOptions { QueueSize = 256 });
        _device.Activate(_device.DeviceFeatures);
        _driver = SplitDriverQueue.Allocate(0, 256, alloc, true);
        _queue = SplitDeviceQueue.Create(0, 256, _ram.Memory, _driver.DescriptorTable, _driver.DriverArea, _driver.DeviceArea, true, true, out _)!;
        var header = alloc.Allocate(16);
        new BlkRequestHeader((uint)BlkRequestType.In, 0, 8).Write(_ram.Memory.GetSpan(header, 16));
        var data = alloc.Allocate((ulong)BlockSize, 4096);
        var status = alloc.Allocate(1);
        _chain = [new(header, 16, false), new(data, (uint)BlockSize, true), new(status, 1, true)];
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _backend.Dispose();
        _ram.Dispose();
    }

    [Benchmark(Description = "32 reads: chain walk, checks, backend, used ring", OperationsPerInvoke = Batch)]
    public void ProcessReads()
    {
        for (var i = 0; i < Batch; i++)
            _driver.TryAdd(_chain, out _);
        _driver.Publish();
        _device.ProcessQueue(_queue);
        while (_driver.TryTakeUsed(out _, out _, out _))
        {
        }
    }
}

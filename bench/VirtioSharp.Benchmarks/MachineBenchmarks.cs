using BenchmarkDotNet.Attributes;
using VirtioSharp.Block;
using VirtioSharp.Machine;

namespace VirtioSharp.Benchmarks;

/// <summary>
/// Question: how fast is the whole in-process machine — driver, MMIO notify, device thread,
/// interrupt thread, completion — at queue depth 1 and 32 on a null disk?
/// </summary>
[MemoryDiagnoser]
public class MachineBenchmarks
{
    private NullBackend _backend = null!;
    private VirtioMachine _machine = null!;
    private BlkDriver _driver = null!;
    private ulong _buffers;

    [Params(1, 32)]
    public int Depth { get; set; }

    private const int Requests = 256;

    [GlobalSetup]
    public void Setup()
    {
        _backend = new NullBackend(64 << 20);
        var device = new BlkDevice(_backend, new BlkDeviceOptions { QueueSize = 128 });
        _machine = new VirtioMachine(device, VirtioMachine.RamFor(1, 128, 4096) + (8 << 20));
        var transport = _machine.CreateDriverTransport();
        _driver = BlkDriver.Start(transport, new BlkDriverOptions { QueueSize = 128, MaxTransfer = 4096 });
        _buffers = transport.Allocator.Allocate(4096UL * 32, 4096);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _driver.Dispose();
        _machine.Dispose();
        _backend.Dispose();
    }

    [Benchmark(Description = "4 KiB zero-copy reads through the machine", OperationsPerInvoke = Requests)]
    public async Task Reads()
    {
        var workers = new Task[Depth];
        var per = Requests / Depth;
        for (var w = 0; w < Depth; w++)
        {
            var buffer = _buffers + (ulong)w * 4096;
            workers[w] = Task.Run(async () =>
            {
                for (var i = 0; i < per; i++)
                    await _driver.SubmitDirectAsync(BlkRequestType.In, (ulong)(i * 8), buffer, 4096);
            });
        }
        await Task.WhenAll(workers);
    }
}

using VirtioSharp.Block;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Machine;

/// <summary>
/// The in-process machine lends its device no <see cref="Devices.IQueueIo"/>: a backend that
/// completes asynchronously is served there through its synchronous calls.
/// </summary>
public sealed class AsyncBackendMachineTests
{
    [Fact]
    public async Task An_asynchronous_backend_serves_the_machine_through_its_synchronous_fallback()
    {
        var backend = new ThreadedBackend(4 << 20, hold: false);
        using var rig = new MachineRig(backend, queueSize: 32, numQueues: 2);
        var data = new byte[200 * 1024];
        new Random(3).NextBytes(data);
        await rig.Driver.WriteAsync(1 << 20, data);
        await rig.Driver.FlushAsync();
        var back = new byte[data.Length];
        await rig.Driver.ReadAsync(1 << 20, back);
        Assert.Equal(data, back);
        Assert.Equal(data, backend.Disk.Contents(1 << 20, data.Length).ToArray());
        Assert.Equal(0, backend.Started);
        Assert.True(backend.SyncCalls > 0);
        rig.AssertHealthy();
    }
}

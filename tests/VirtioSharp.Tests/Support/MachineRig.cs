using VirtioSharp.Block;
using VirtioSharp.Diagnostics;
using VirtioSharp.Machine;

namespace VirtioSharp.Tests.Support;

/// <summary>
/// The whole simulated machine: a <see cref="BlkDevice"/> behind virtio-mmio with its device and
/// interrupt threads, and a <see cref="BlkDriver"/> initialized through the MMIO transport.
/// </summary>
public sealed class MachineRig : IDisposable
{
    public MachineRig(IBlockBackend backend, int queueSize = 64, int numQueues = 1, int maxTransfer = 64 * 1024,
        BlkDeviceOptions? device = null, BlkDriverOptions? driver = null, int? driverQueueSize = null)
    {
        Backend = backend;
        Log = new ListLogSink();
        Device = new BlkDevice(backend, (device ?? new BlkDeviceOptions()) with { QueueSize = queueSize, NumQueues = numQueues, Log = Log });
        Machine = new VirtioMachine(Device, VirtioMachine.RamFor(numQueues, queueSize, maxTransfer));
        Driver = BlkDriver.Start(Machine.CreateDriverTransport(),
            (driver ?? new BlkDriverOptions()) with { QueueSize = driverQueueSize ?? queueSize, NumQueues = numQueues, MaxTransfer = maxTransfer, Log = Log });
    }

    public IBlockBackend Backend { get; }
    public ListLogSink Log { get; }
    public BlkDevice Device { get; }
    public VirtioMachine Machine { get; }
    public BlkDriver Driver { get; }

    /// <summary>The device saw no driver breach and the driver has nothing in flight or failed.</summary>
    public void AssertHealthy()
    {
        Assert.Null(Driver.Failure);
        Assert.Equal(0, Driver.Outstanding);
        Assert.Equal(0, Device.Breaches.Total);
        Assert.Equal(0, Device.Stats.Malformed);
    }

    public void Dispose()
    {
        Driver.Dispose();
        Machine.Dispose();
        Backend.Dispose();
    }
}

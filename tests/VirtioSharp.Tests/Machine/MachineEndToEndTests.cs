using VirtioSharp.Block;
using VirtioSharp.Machine;

namespace VirtioSharp.Tests.Machine;

public sealed class MachineEndToEndTests
{
    [Fact]
    public async Task Write_then_read_back_through_mmio_on_a_memory_disk()
    {
        using var backend = new MemoryBackend(1 << 20);
        var device = new BlkDevice(backend, new BlkDeviceOptions { QueueSize = 64 });
        using var machine = new VirtioMachine(device, VirtioMachine.RamFor(1, 64, 64 * 1024));
        using var driver = BlkDriver.Start(machine.CreateDriverTransport(), new BlkDriverOptions { QueueSize = 64 });

        var data = new byte[8192];
        new Random(1).NextBytes(data);
        await driver.WriteAsync(4096, data);
        var back = new byte[8192];
        await driver.ReadAsync(4096, back);

        Assert.Equal(data, back);
        Assert.Equal(data, backend.Contents(4096, 8192).ToArray());
        Assert.Equal("virtiosharp", await driver.GetIdAsync());
    }
}

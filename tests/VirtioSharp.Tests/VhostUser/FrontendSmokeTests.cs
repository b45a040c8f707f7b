using VirtioSharp.Block;
using VirtioSharp.VhostUser.Frontend;

namespace VirtioSharp.Tests.VhostUser;

public sealed class FrontendSmokeTests
{
    [Fact]
    public async Task Write_and_read_back_through_qemu_storage_daemon()
    {
        using var dir = new TempDir();
        var image = dir.File("disk.raw");
        FileBackend.Create(image, 16 << 20);
        using var qsd = QemuStorageDaemon.ExportFile(dir, image);
        using var transport = VhostUserFrontendTransport.Connect(qsd.SocketPath);
        using var driver = BlkDriver.Start(transport, new BlkDriverOptions { QueueSize = 128 });
        Assert.Equal(16UL << 20, driver.Capacity);
        var data = new byte[8192];
        new Random(1).NextBytes(data);
        await driver.WriteAsync(4096, data);
        var back = new byte[8192];
        await driver.ReadAsync(4096, back);
        Assert.Equal(data, back);
    }
}

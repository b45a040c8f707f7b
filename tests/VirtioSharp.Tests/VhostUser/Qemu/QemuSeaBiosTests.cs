using System.Diagnostics;
using System.Text;
using VirtioSharp.Block;
using VirtioSharp.Diagnostics;
using VirtioSharp.VhostUser.Backend;
using Xunit;

namespace VirtioSharp.Tests.VhostUser.Qemu;

/// <summary>
/// A test that runs QEMU. ./test.sh installs qemu-system-x86, so a missing QEMU is a failure
/// (a skip would hide a broken install step), reported with the package to install.
/// </summary>
public sealed class QemuFactAttribute : FactAttribute
{
    public const string Qemu = "/usr/bin/qemu-system-x86_64";

    public static void RequireQemu() =>
        Assert.True(File.Exists(Qemu), $"{Qemu} is not installed (apt-get install qemu-system-x86, as ./test.sh does)");
}

/// <summary>
/// Interop with a peer nobody here wrote: QEMU as the vhost-user front-end and SeaBIOS's
/// virtio-blk driver in the guest. No kernel is needed: the BIOS boots the disk, and the boot
/// sector (bootsector.S) reads and writes through our back-end.
/// </summary>
public class QemuSeaBiosTests
{
    // bootsector.S, assembled.
    private const string BootSector = "+jHAjtiOwI7QvAB8+4gWW3y4AQK7AIC5AgAw9ooWW3zNE3IhvgCA6CUAuAEDuwB8uQMAMPaKFlt8zRNyCL5cfOgMAOsGvmx86AQA+vTr/Lr4A6yEwHQD7uv4wwBWQkxLLVdSSVRFLU9LDQoAVkJMSy1GQUlMDQoAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAVao=";
    private const int DriveByteOffset = 0x5b; // where the boot sector stores the BIOS drive number before writing itself out

    [QemuFact]
    public void SeaBiosBootsReadsAndWritesThroughTheBackEnd()
    {
        QemuFactAttribute.RequireQemu();
        var dir = Directory.CreateTempSubdirectory("vs-qemu-");
        var image = Path.Combine(dir.FullName, "disk.img");
        var socket = Path.Combine(dir.FullName, "vblk.sock");
        var serial = Path.Combine(dir.FullName, "serial.txt");
        var boot = Convert.FromBase64String(BootSector);
        var disk = new byte[16 << 20];
        boot.CopyTo(disk, 0);
        Encoding.ASCII.GetBytes("VBLK-READ-OK from sector 1\r\n\0").CopyTo(disk, 512);
        File.WriteAllBytes(image, disk);

        var log = new ListLogSink();
        using var backend = FileBackend.Open(image);
        var device = new BlkDevice(backend, new BlkDeviceOptions { Log = log });
        using var server = new VhostUserBlkServer(device, socket);
        server.Start();

        using var qemu = Process.Start(new ProcessStartInfo(QemuFactAttribute.Qemu)
        {
            ArgumentList =
            {
                "-accel", "tcg", "-m", "128", "-nodefaults", "-no-reboot", "-display", "none", "-monitor", "none",
                "-object", "memory-backend-memfd,id=mem,size=128M,share=on", "-numa", "node,memdev=mem",
                "-chardev", $"socket,id=vblk0,path={socket}", "-device", "vhost-user-blk-pci,chardev=vblk0,bootindex=1",
                "-serial", $"file:{serial}",
            },
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        })!;
        try
        {
            var text = "";
            var deadline = Environment.TickCount64 + 60_000;
            while (!text.Contains("VBLK-WRITE-OK", StringComparison.Ordinal) && !text.Contains("VBLK-FAIL", StringComparison.Ordinal))
            {
                if (Environment.TickCount64 > deadline)
                    Assert.Fail($"the guest never finished; serial: {text}\nlog:\n{string.Join("\n", log.Lines.Select(l => l.Message))}");
                if (qemu.HasExited)
                    Assert.Fail($"QEMU exited with {qemu.ExitCode}: {qemu.StandardError.ReadToEnd()}");
                Thread.Sleep(200);
                text = File.Exists(serial) ? File.ReadAllText(serial) : "";
            }
            Assert.Contains("VBLK-READ-OK from sector 1", text, StringComparison.Ordinal);
            Assert.Contains("VBLK-WRITE-OK", text, StringComparison.Ordinal);
        }
        finally
        {
            qemu.Kill();
            qemu.WaitForExit();
        }
        TestServer.Eventually(() => server.SessionsEnded == 1, "QEMU's connection to end");
        server.Stop();

        var written = File.ReadAllBytes(image).AsSpan(1024, 512).ToArray();
        written[DriveByteOffset] = 0;
        Assert.Equal(boot, written);
        Assert.Contains(log.Lines, l => l.Message.StartsWith("features agreed:", StringComparison.Ordinal));
        Assert.Contains(log.Lines, l => l.Message.StartsWith("queue 0: started", StringComparison.Ordinal));
        Assert.True(device.Stats.BytesRead >= 1024 && device.Stats.BytesWritten == 512);
        dir.Delete(recursive: true);
    }
}

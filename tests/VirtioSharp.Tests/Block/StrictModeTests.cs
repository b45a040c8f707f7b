using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Driver;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Block;

/// <summary>How the device judges driver breaches: logged always, DEVICE_NEEDS_RESET with strict=fail (2.1.2).</summary>
public sealed class StrictModeTests
{
    private static Buf[] BadLengthRead(BlkHarness h) =>
        [Buf.R(h.Header(BlkRequestType.In, 0), 16), Buf.W(h.Data(100), 100), Buf.W(h.StatusByte(), 1)];

    [Fact]
    public void Breaches_are_logged_with_their_section_and_the_request_still_answered_5_2_6_1()
    {
        using var h = new BlkHarness(new MemoryBackend(1 << 20), new BlkDeviceOptions { Strict = StrictMode.Off });
        var c = h.Run(BadLengthRead(h));
        Assert.Equal((byte)BlkStatus.IoErr, c.Status);
        var breach = Assert.Single(h.Device.Breaches.Breaches);
        Assert.Equal("5.2.6.1", breach.Section);
        Assert.True(h.Log.Contains("spec 5.2.6.1"));
        Assert.False(h.Device.Breaches.ResetRequested);
        Assert.Contains("5.2.6.1 x1", h.Device.Breaches.Summary());
    }

    [Fact]
    public void Strict_fail_answers_the_request_then_asks_for_DEVICE_NEEDS_RESET_2_1_2()
    {
        using var h = new BlkHarness(new MemoryBackend(1 << 20), new BlkDeviceOptions { Strict = StrictMode.Fail });
        h.Ring.Offer(h.Ring.Chain(BadLengthRead(h)));
        Assert.Equal(QueueOutcome.NeedsReset, h.Device.ProcessQueue(h.Queue));
        Assert.Equal(1, h.Ring.UsedIdx); // the head still comes back
        Assert.True(h.Device.Breaches.ResetRequested);
    }

    [Fact]
    public async Task Through_the_machine_the_driver_sees_DEVICE_NEEDS_RESET_and_fails_further_requests_2_1_2()
    {
        using var rig = new MachineRig(new MemoryBackend(1 << 20), queueSize: 16, device: new BlkDeviceOptions { Strict = StrictMode.Fail });
        await rig.Driver.WriteAsync(0, new byte[512]); // a well-formed request is fine

        var address = rig.Driver.Transport.Allocator.Allocate(512, 4096);
        // 5.2.6.1 breach: IN data not a multiple of 512. Answered, or failed once the device resets.
        try
        {
            Assert.Equal(BlkStatus.IoErr, await rig.Driver.SubmitDirectAsync(BlkRequestType.In, 0, address, 100));
        }
        catch (VirtioDeviceException)
        {
        }

        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (rig.Driver.Failure is null && DateTime.UtcNow < deadline)
            await Task.Delay(5);
        Assert.NotNull(rig.Driver.Failure);
        Assert.True(rig.Machine.Device.Status.HasFlag(DeviceStatus.DeviceNeedsReset));
        await Assert.ThrowsAsync<VirtioDeviceException>(async () => await rig.Driver.ReadAsync(0, new byte[512]));
        Assert.True(rig.Log.Contains("DEVICE_NEEDS_RESET") || rig.Log.Contains("device needs reset"));
    }

    // 2.1.1: the driver cannot rely on requests in flight when DEVICE_NEEDS_RESET is set; it must
    // not wait for them forever either. Every caller, including ones racing with the failure, ends.
    [Fact]
    public async Task Every_caller_racing_with_DEVICE_NEEDS_RESET_finishes_2_1_2()
    {
        for (var round = 0; round < 20; round++)
        {
            using var rig = new MachineRig(new MemoryBackend(1 << 20), queueSize: 16, device: new BlkDeviceOptions { Strict = StrictMode.Fail });
            var driver = rig.Driver;
            var bad = driver.Transport.Allocator.Allocate(512, 4096);
            var callers = Enumerable.Range(0, 16).Select(t => Task.Run(async () =>
            {
                var buffer = new byte[512];
                for (var i = 0; i < 200; i++)
                {
                    try
                    {
                        if (t == 0 && i == 20)
                            await driver.SubmitDirectAsync(BlkRequestType.In, 0, bad, 100); // the breach
                        else
                            await driver.WriteAsync((ulong)t * 512, buffer);
                    }
                    catch (VirtioDeviceException)
                    {
                        return;
                    }
                }
            })).ToArray();
            var all = Task.WhenAll(callers);
            var finished = await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(20)));
            Assert.True(finished == all, $"round {round}: a caller never finished ({driver.Outstanding} requests outstanding, failure: {driver.Failure})");
            await all;
            Assert.NotNull(driver.Failure);
            Assert.Equal(0, driver.Outstanding);
        }
    }

    [Fact]
    public void Strict_warn_also_reports_a_driver_without_VERSION_1_6_1()
    {
        using var h = new MmioHarness(new BlkDeviceOptions { Strict = StrictMode.Warn });
        h.Initialize(h.Blk.DeviceFeatures & 0xffffffffUL);
        Assert.Contains(h.Blk.Breaches.Breaches, b => b.Section == "6.1");
        Assert.False(h.Blk.Breaches.ResetRequested);
    }
}

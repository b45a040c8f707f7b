using VirtioSharp.Block;
using VirtioSharp.Devices;
using R = VirtioSharp.Mmio.MmioRegisters;

namespace VirtioSharp.Tests.Conformance;

/// <summary>
/// Status, feature and virtio-mmio register rules (2.1, 2.2, 3.1, 4.2, 6) broken on purpose by a
/// driver that stores to the registers itself; each checked with strict off, warn and fail
/// (see <see cref="BreachCheck"/>).
/// </summary>
public sealed class InitBreachTests
{
    private const DeviceStatus Ack = DeviceStatus.Acknowledge;
    private const DeviceStatus Drv = DeviceStatus.Driver;
    private const DeviceStatus FeaturesOk = DeviceStatus.FeaturesOk;
    private const DeviceStatus DriverOk = DeviceStatus.DriverOk;

    /// <summary>Queue 0 set up and DRIVER_OK, after whatever the test did before.</summary>
    private static void Finish(HandDriver d)
    {
        d.UseQueue(16);
        d.SetupQueue(0, 16);
        d.DriverOk();
    }

    // --- features (2.2.1, 6.1) ---

    [Fact]
    public void Feature_the_device_never_offered_2_2_1() => BreachCheck.Init(
        new Expect("2.2.1", "only offered feature bits", "found 0x1000000000000000 (bit 60)") { Queue = -1 },
        d =>
        {
            d.Begin();
            d.WriteDriverFeatures(d.ReadDeviceFeatures() | 1UL << 60);
            d.SetStatus(Ack | Drv | FeaturesOk);
        },
        After.Refused,
        d => Assert.Equal(DeviceStatus.None, d.Status & FeaturesOk)); // 3.1.1 step 6: FEATURES_OK does not stick

    [Fact]
    public void Feature_bits_past_63_2_2_1() => BreachCheck.Init(
        new Expect("2.2.1", "only offered feature bits", "0x4 in feature window 2") { Queue = -1 },
        d =>
        {
            d.Begin();
            d.Write(R.DriverFeaturesSel, 2);
            d.Write(R.DriverFeatures, 4);
            d.Negotiate();
            Finish(d);
        });

    [Fact]
    public void Version_1_not_accepted_6_1() => BreachCheck.Init(
        new Expect("6.1", "VIRTIO_F_VERSION_1 accepted", "bit 32 clear") { Queue = -1, StrictOnly = true },
        d =>
        {
            d.Begin();
            d.Negotiate(RingBreachTests.Offered & ~VirtioFeatures.Bit(VirtioFeatures.Version1));
            Finish(d);
        });

    // --- status and initialization order (2.1.1, 3.1.1) ---

    [Fact]
    public void Status_bit_cleared_without_reset_2_1_1() => BreachCheck.Init(
        new Expect("2.1.1", "no status bit cleared except by writing 0") { Queue = -1 },
        d =>
        {
            d.Init();
            d.SetStatus(Drv | FeaturesOk | DriverOk); // ACKNOWLEDGE dropped
        });

    [Fact]
    public void Driver_before_acknowledge_3_1_1() => BreachCheck.Init(
        new Expect("3.1.1", "ACKNOWLEDGE set before DRIVER") { Queue = -1, StrictOnly = true },
        d =>
        {
            d.Reset();
            d.SetStatus(Drv);
            d.SetStatus(Ack | Drv);
            d.Negotiate();
            Finish(d);
        });

    [Fact]
    public void Features_ok_before_driver_3_1_1() => BreachCheck.Init(
        new Expect("3.1.1", "DRIVER set before FEATURES_OK") { Queue = -1, StrictOnly = true },
        d =>
        {
            d.Reset();
            d.SetStatus(Ack);
            d.Negotiate();
            d.SetStatus(Ack | Drv | FeaturesOk);
            Finish(d);
        });

    [Fact]
    public void Features_written_after_features_ok_3_1_1() => BreachCheck.Init(
        new Expect("3.1.1", "driver features written before FEATURES_OK") { Queue = -1 },
        d =>
        {
            d.Begin();
            d.Negotiate();
            d.WriteDriverFeatures(0);
            Finish(d);
        });

    [Fact]
    public void Queue_enabled_before_features_ok_3_1_1() => BreachCheck.Init(
        new Expect("3.1.1", "queues set up after FEATURES_OK", "QueueReady with status") { Queue = 0 },
        d =>
        {
            d.Begin();
            d.UseQueue(16);
            d.SetupQueue(0, 16);
            d.Negotiate();
            d.DriverOk();
        });

    [Fact]
    public void Driver_ok_without_features_ok_3_1_1() => BreachCheck.Init(
        new Expect("3.1.1", "FEATURES_OK before DRIVER_OK") { Queue = -1 },
        d =>
        {
            d.Begin();
            d.WriteDriverFeatures(d.ReadDeviceFeatures() & RingBreachTests.Offered);
            d.UseQueue(16);
            d.SetupQueue(0, 16);
            d.SetStatus(Ack | Drv | DriverOk);
            d.RunDevice();
        });

    [Fact]
    public void Queue_registers_written_after_driver_ok_3_1_1() => BreachCheck.Init(
        new Expect("3.1.1", "queue setup before DRIVER_OK", "QueueNum written after DRIVER_OK") { Queue = 1, StrictOnly = true },
        d =>
        {
            d.Init();
            d.Write(R.QueueSel, 1);
            d.Write(R.QueueNum, 16);
        });

    [Fact]
    public void Queue_enabled_after_driver_ok_3_1_1() => BreachCheck.Init(
        new Expect("3.1.1", "queue setup before DRIVER_OK", "QueueReady = 1 after DRIVER_OK") { Queue = 1, StrictOnly = true },
        d =>
        {
            d.Begin();
            d.Negotiate();
            d.SetupQueue(1, 16, ready: false);
            Finish(d);
            d.Write(R.QueueSel, 1);
            d.Write(R.QueueReady, 1);
        });

    /// <summary>3.1.1 / 2.1.2: a notification before DRIVER_OK is a breach, and the device must not consume the buffer until DRIVER_OK.</summary>
    [Fact]
    public void Notification_before_driver_ok_3_1_1() => BreachCheck.Init(
        new Expect("3.1.1", "no notification before DRIVER_OK", "QueueNotify 0") { Queue = 0 },
        d =>
        {
            d.Begin();
            d.Negotiate();
            d.UseQueue(16);
            d.SetupQueue(0, 16);
            var status = d.StatusByte();
            d.Submit(new Seg(d.Header(BlkRequestType.Flush), 16), new Seg(status, 1, true));
            Assert.Equal(0, d.UsedIdx); // 2.1.2: not consumed before DRIVER_OK
            d.DriverOk();
            // Served at DRIVER_OK, unless strict=fail already stopped the device.
            Assert.Equal(d.NeedsReset ? 0 : 1, d.UsedIdx);
        });

    // --- virtio-mmio registers (4.2.2.2) ---

    [Fact]
    public void Queue_register_written_while_the_queue_is_ready_4_2_2_2() => BreachCheck.Init(
        new Expect("4.2.2.2", "queue registers written while QueueReady is 0", "QueueNum written to a ready queue") { Queue = 0 },
        d =>
        {
            d.Begin();
            d.Negotiate();
            d.UseQueue(16);
            d.SetupQueue(0, 16);
            d.Write(R.QueueNum, 8); // ignored: the queue keeps its size
            d.DriverOk();
        });

    [Fact]
    public void Queue_size_above_queue_num_max_4_2_2_2() => BreachCheck.Init(
        new Expect("4.2.2.2", $"QueueNum in 1..{HandDriver.MaxQueueSize} (QueueNumMax)", "found 128") { Queue = 0 },
        d =>
        {
            d.Begin();
            d.Negotiate();
            d.UseQueue(128);
            d.SetupQueue(0, 128);
            d.DriverOk();
        },
        After.NeedsReset);

    [Fact]
    public void Narrow_register_read_4_2_2_2() => BreachCheck.Init(
        new Expect("4.2.2.2", "32-bit aligned register reads", "2-byte read at 0x70") { Queue = -1 },
        d =>
        {
            d.Init();
            d.Mmio.Read(R.Status, 2);
        });

    [Fact]
    public void Write_to_a_read_only_register_4_2_2_2() => BreachCheck.Init(
        new Expect("4.2.2.2", "writes to writable registers only", "read-only QueueNumMax") { Queue = -1 },
        d =>
        {
            d.Init();
            d.Write(R.QueueNumMax, 1024);
        });

    [Fact]
    public void Read_of_a_write_only_register_4_2_2_2() => BreachCheck.Init(
        new Expect("4.2.2.2", "no reads of write-only registers", "a read of QueueNotify") { Queue = -1, StrictOnly = true },
        d =>
        {
            d.Init();
            d.Read(R.QueueNotify);
        });

    [Fact]
    public void Device_features_read_before_selecting_a_window_4_2_2_2() => BreachCheck.Init(
        new Expect("4.2.2.2", "a DeviceFeaturesSel write before reading DeviceFeatures") { Queue = -1, StrictOnly = true },
        d =>
        {
            d.Begin();
            d.Read(R.DeviceFeatures);
            d.Negotiate();
            Finish(d);
        });

    [Fact]
    public void Driver_features_written_before_selecting_a_window_4_2_2_2() => BreachCheck.Init(
        new Expect("4.2.2.2", "a DriverFeaturesSel write before writing DriverFeatures") { Queue = -1, StrictOnly = true },
        d =>
        {
            d.Begin();
            d.Write(R.DriverFeatures, (uint)RingBreachTests.Offered);
            d.Negotiate();
            Finish(d);
        });

    [Fact]
    public void Undefined_bits_in_interrupt_ack_4_2_2_2() => BreachCheck.Init(
        new Expect("4.2.2.2", "only defined bits (1, 2) in InterruptACK", "InterruptACK 0x4") { Queue = -1, StrictOnly = true },
        d =>
        {
            d.Init();
            d.Write(R.InterruptAck, 4);
        });

    [Fact]
    public void Notification_of_a_queue_that_does_not_exist_4_2_3_3() => BreachCheck.Init(
        new Expect("4.2.3.3", "a queue index below 2", "QueueNotify 7") { Queue = 7 },
        d =>
        {
            d.Init();
            d.Notify(7);
        });

    // --- ring placement (2.7.1, 2.7) ---

    [Fact]
    public void Ring_parts_misaligned_2_7_1() => BreachCheck.Init(
        new Expect("2.7.1", "virtqueue parts aligned to 16, 2 and 4 bytes", "break the 16/2/4 alignment") { Queue = 0 },
        d =>
        {
            d.Begin();
            d.Negotiate();
            d.SetupQueueAt(0, 16, d.DescTable() + 8, d.AvailRing(), d.UsedRing());
            d.DriverOk();
        },
        After.NeedsReset);

    [Fact]
    public void Ring_outside_guest_memory_2_7() => BreachCheck.Init(
        new Expect("2.7", "a ring laid out in guest memory", "is not inside guest memory") { Queue = 0 },
        d =>
        {
            d.Begin();
            d.Negotiate();
            d.SetupQueueAt(0, 16, HandDriver.RamBase + HandDriver.RamSize - 128, d.AvailRing(), d.UsedRing());
            d.DriverOk();
        },
        After.NeedsReset);
}

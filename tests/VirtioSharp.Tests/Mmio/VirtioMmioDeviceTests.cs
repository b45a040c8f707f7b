using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Driver;
using VirtioSharp.Machine;
using VirtioSharp.Memory;
using VirtioSharp.Mmio;
using VirtioSharp.Queues;
using VirtioSharp.Tests.Support;
using R = VirtioSharp.Mmio.MmioRegisters;

namespace VirtioSharp.Tests.Mmio;

/// <summary>The virtio-mmio register file (4.2.2), initialization (3.1.1, 4.2.3) and the device status rules (2.1).</summary>
public sealed class VirtioMmioDeviceTests
{
    private const DeviceStatus Ack = DeviceStatus.Acknowledge;
    private const DeviceStatus Drv = DeviceStatus.Driver;
    private const DeviceStatus FOk = DeviceStatus.FeaturesOk;
    private const DeviceStatus DOk = DeviceStatus.DriverOk;

    private static ulong Bit(int b) => VirtioFeatures.Bit(b);
    private static readonly ulong Modern = Bit(VirtioFeatures.Version1);

    [Fact]
    public void Identification_registers_4_2_2_1()
    {
        using var h = new MmioHarness();
        Assert.Equal(0x74726976u, h.Read(R.MagicValue)); // "virt"
        Assert.Equal(2u, h.Read(R.Version));
        Assert.Equal(2u, h.Read(R.DeviceId));            // 5.2.1: block device
        Assert.NotEqual(0u, h.Read(R.VendorId));
        Assert.Equal(h.Read(R.ConfigGeneration), h.Read(R.ConfigGeneration));
        Assert.Equal(0u, h.Read(R.Status));              // 2.1: starts out as 0
        Assert.Equal(0u, h.Read(R.InterruptStatus));
    }

    [Fact]
    public void Device_features_are_presented_32_bits_per_select_window_4_2_2()
    {
        using var h = new MmioHarness();
        var offered = h.Blk.DeviceFeatures;
        Assert.True(VirtioFeatures.Has(offered, BlkFeatures.Flush));
        Assert.True(VirtioFeatures.Has(offered, VirtioFeatures.Version1));

        h.Write(R.DeviceFeaturesSel, 0);
        Assert.Equal((uint)offered, h.Read(R.DeviceFeatures));
        h.Write(R.DeviceFeaturesSel, 1);
        Assert.Equal((uint)(offered >> 32), h.Read(R.DeviceFeatures));
        Assert.Equal(1u, h.Read(R.DeviceFeatures) & 1); // VERSION_1 is bit 0 of the high word
        foreach (var window in new uint[] { 2, 3, 63, uint.MaxValue })
        {
            h.Write(R.DeviceFeaturesSel, window);
            Assert.Equal(0u, h.Read(R.DeviceFeatures)); // no feature bits past 63
        }
        Assert.Equal(offered, h.ReadDeviceFeatures());
    }

    // The lesson from another emulator: a DriverFeatures write that lost the other word meant
    // FLUSH (low word) or VERSION_1 (high word) was never negotiated.
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Each_driver_feature_window_keeps_the_other_word_4_2_2(bool lowFirst)
    {
        using var h = new MmioHarness();
        var wanted = h.Blk.DeviceFeatures & (Bit(BlkFeatures.Flush) | Bit(BlkFeatures.Discard) | Modern);
        h.SetStatus(Ack);
        h.SetStatus(Ack | Drv);
        void Window(uint sel)
        {
            h.Write(R.DriverFeaturesSel, sel);
            h.Write(R.DriverFeatures, (uint)(wanted >> (int)(32 * sel)));
        }
        if (lowFirst) { Window(0); Window(1); }
        else { Window(1); Window(0); }
        Window(1); // writing a window again changes nothing else
        h.SetStatus(Ack | Drv | FOk);
        Assert.True(h.Status.HasFlag(FOk));
        h.SetupQueue();
        h.SetStatus(Ack | Drv | FOk | DOk);

        Assert.Equal(wanted, h.Mmio.NegotiatedFeatures);
        Assert.Equal(wanted, h.Blk.NegotiatedFeatures);
        Assert.True(VirtioFeatures.Has(h.Blk.NegotiatedFeatures, BlkFeatures.Flush));
        Assert.True(VirtioFeatures.Has(h.Blk.NegotiatedFeatures, VirtioFeatures.Version1));
    }

    [Fact]
    public void Driver_feature_windows_past_the_second_hold_nothing_4_2_2()
    {
        using var h = new MmioHarness();
        h.SetStatus(Ack | Drv);
        h.WriteDriverFeatures(Modern);
        foreach (var window in new uint[] { 2, 3, uint.MaxValue })
        {
            h.Write(R.DriverFeaturesSel, window);
            h.Write(R.DriverFeatures, 0);          // zero is harmless
            h.Write(R.DriverFeatures, 0xffffffff); // bits past 63 are not offered
        }
        Assert.Equal(3, h.Blk.Breaches.CountsBySection.GetValueOrDefault("2.2.1"));
        h.SetStatus(Ack | Drv | FOk);
        Assert.True(h.Status.HasFlag(FOk));
        h.SetupQueue();
        h.SetStatus(Ack | Drv | FOk | DOk);
        Assert.Equal(Modern, h.Mmio.NegotiatedFeatures);
    }

    [Fact]
    public void Driver_features_written_after_FEATURES_OK_are_ignored_3_1_1()
    {
        using var h = new MmioHarness();
        Assert.True(h.Initialize(Modern, driverOk: false).HasFlag(FOk));
        h.WriteDriverFeatures(Modern | Bit(BlkFeatures.Flush)); // 3.1.1 step 5: no new features after FEATURES_OK
        h.SetStatus(Ack | Drv | FOk | DOk);
        Assert.Equal(Modern, h.Mmio.NegotiatedFeatures);
        Assert.Contains(h.Blk.Breaches.Breaches, b => b.Section == "3.1.1");
    }

    [Fact]
    public void Features_not_offered_make_FEATURES_OK_not_stick_3_1_1()
    {
        using var h = new MmioHarness(new BlkDeviceOptions { OfferIndirect = false });
        var notOffered = Bit(VirtioFeatures.RingIndirectDesc);
        Assert.False(VirtioFeatures.Has(h.Blk.DeviceFeatures, VirtioFeatures.RingIndirectDesc));

        var status = h.Initialize(Modern | notOffered, driverOk: false);

        Assert.False(status.HasFlag(FOk)); // 3.1.1 step 6: the driver re-reads and sees it did not stick
        Assert.Equal(Ack | Drv, status);
        Assert.Contains(h.Blk.Breaches.Breaches, b => b.Section == "2.2.1");
    }

    // A driver that ignores the refused FEATURES_OK and carries on must still not get a feature
    // the device never offered: negotiated = offered AND accepted.
    [Fact]
    public void A_feature_the_device_did_not_offer_is_never_used_even_if_the_driver_presses_on_2_2()
    {
        using var h = new MmioHarness(new BlkDeviceOptions { OfferIndirect = false });
        h.Initialize(Modern | Bit(VirtioFeatures.RingIndirectDesc)); // FEATURES_OK refused, DRIVER_OK anyway
        Assert.Equal(0UL, h.Mmio.NegotiatedFeatures & Bit(VirtioFeatures.RingIndirectDesc));

        var ring = h.Ring;
        var header = ring.Alloc(16);
        new BlkRequestHeader((uint)BlkRequestType.Flush, 0, 0).Write(ring.Span(header, 16));
        var status = ring.Alloc(1);
        ring.Span(status, 1)[0] = 0xee;
        var table = ring.IndirectTable(Buf.R(header, 16), Buf.W(status, 1));
        ring.WriteDescriptor(0, table, 32, SplitRing.DescFIndirect, 0);
        ring.Offer(0);
        h.Mmio.ProcessQueue(0);

        Assert.Equal(1, ring.UsedIdx);
        Assert.Equal((0u, 0u), ring.UsedElement(0)); // returned unread: INDIRECT was not negotiated (2.7.5.3.1)
        Assert.Equal(0xee, ring.Span(status, 1)[0]);
        Assert.Contains(h.Blk.Breaches.Breaches, b => b.Section == "2.7.5.3.1");
    }

    [Fact]
    public void The_init_sequence_3_1_1_through_MmioDriverTransport()
    {
        using var h = new MmioHarness();
        var bus = new MmioBus();
        bus.Map(VirtioMachine.MmioBase, h.Mmio);
        using var irq = new InterruptLine("test-irq");
        var allocator = new GuestAllocator(h.Ring.Memory, h.Ring.RamEnd - (1 << 20), 1 << 20);
        using var transport = new MmioDriverTransport(bus, VirtioMachine.MmioBase, h.Ring.Memory, allocator, irq);
        Assert.Equal(2u, transport.DeviceId);

        var accepted = VirtioDriverInit.Begin(transport, 2, offered => offered & (Modern | Bit(BlkFeatures.Flush) | Bit(VirtioFeatures.RingEventIdx)));
        Assert.Equal(Ack | Drv | FOk, transport.GetStatus());
        Assert.Equal(Modern | Bit(BlkFeatures.Flush) | Bit(VirtioFeatures.RingEventIdx), accepted);

        Assert.Equal(64, transport.GetMaxQueueSize(0));
        Assert.Equal(0, transport.GetMaxQueueSize(1)); // 4.2.2: QueueNumMax 0 for a queue that does not exist
        var q = SplitDriverQueue.Allocate(0, 64, allocator, eventIdx: true);
        transport.SetupQueue(0, 64, q.DescriptorTable, q.DriverArea, q.DeviceArea);
        Assert.Equal(1u, h.Read(R.QueueReady));
        VirtioDriverInit.Finish(transport);

        Assert.Equal(Ack | Drv | FOk | DOk, transport.GetStatus());
        Assert.Equal(accepted, h.Mmio.NegotiatedFeatures);
        Assert.Equal(accepted, h.Blk.NegotiatedFeatures);
        Assert.Equal(0, h.Blk.Breaches.Total);

        // Config space through the transport (4.2.2: from 0x100): capacity in 512-byte sectors.
        var config = new byte[BlkLayout.ConfigSize];
        transport.ReadConfig(0, config);
        Assert.Equal((ulong)(1 << 20) / 512, BlkConfig.Parse(config).Capacity);
        Assert.Equal(64u - 2, BlkConfig.Parse(config).SegMax);
    }

    [Fact]
    public void A_transport_refuses_a_bus_address_without_a_virtio_device_4_2_3_1()
    {
        var bus = new MmioBus();
        using var ram = new GuestRam(0x1000, 4096);
        using var irq = new InterruptLine("test-irq");
        Assert.Throws<VirtioDeviceException>(() => new MmioDriverTransport(bus, 0x2000_0000, ram.Memory, new GuestAllocator(ram.Memory, 0x1000, 4096), irq));
    }

    [Fact]
    public void DRIVER_OK_without_FEATURES_OK_is_a_breach_3_1_1()
    {
        using var h = new MmioHarness();
        h.SetStatus(Ack);
        h.SetStatus(Ack | Drv);
        h.WriteDriverFeatures(Modern);
        h.SetupQueue();
        h.SetStatus(Ack | Drv | DOk);
        var breaches = h.Blk.Breaches.Breaches;
        Assert.Contains(breaches, b => b.Section == "3.1.1" && b.Expected.Contains("FEATURES_OK before DRIVER_OK"));
        Assert.Contains(breaches, b => b.Section == "3.1.1" && b.Expected.Contains("queues set up after FEATURES_OK"));
    }

    [Fact]
    public void Queue_registers_written_while_the_queue_is_ready_are_ignored_4_2_2_2()
    {
        using var h = new MmioHarness();
        h.Initialize(Modern);
        h.Write(R.QueueSel, 0);
        h.Write(R.QueueNum, 2);
        h.Write(R.QueueDescLow, 0xdead0000);
        h.Write(R.QueueDeviceHigh, 0xffff);
        Assert.Equal(3, h.Blk.Breaches.CountsBySection.GetValueOrDefault("4.2.2.2"));

        // The queue still runs on the rings it was given.
        Assert.Equal((1, (byte)BlkStatus.Ok), h.Flush());
    }

    [Fact]
    public void Writing_0_to_Status_resets_everything_4_2_2()
    {
        using var h = new MmioHarness();
        h.Initialize(Modern | Bit(BlkFeatures.Flush));
        Assert.Equal((1, (byte)BlkStatus.Ok), h.Flush());
        Assert.NotEqual(0u, h.Read(R.InterruptStatus));
        h.Write(R.DeviceFeaturesSel, 1);
        h.Write(R.QueueSel, 0);

        h.SetStatus(0);

        Assert.Equal(0u, h.Read(R.Status));
        Assert.Equal(0u, h.Read(R.InterruptStatus));  // 4.2.2.1: upon reset, InterruptStatus cleared
        Assert.Equal(0u, h.Read(R.QueueReady));       // ... and every QueueReady
        Assert.Equal(0UL, h.Mmio.NegotiatedFeatures);
        Assert.Equal(0UL, h.Blk.NegotiatedFeatures);
        Assert.Equal((uint)h.Blk.DeviceFeatures, h.Read(R.DeviceFeatures)); // select back to window 0

        // Nothing is served until the driver initializes again.
        h.Ring.AvailIdx = 0;
        h.Ring.UsedIdx = 0;
        Assert.Equal(0, h.Flush().Used);
        h.Ring.AvailIdx = 0; // a driver starts again with fresh, zeroed rings
        h.Initialize(Modern);
        Assert.Equal(Modern, h.Mmio.NegotiatedFeatures);
        Assert.Equal(1, h.Flush().Used);
    }

    [Fact]
    public void A_driver_that_never_sets_VERSION_1_is_served_with_one_warning_naming_bit_32_6_1()
    {
        using var h = new MmioHarness();
        var lowOnly = h.Blk.DeviceFeatures & 0xffffffffUL;
        var status = h.Initialize(lowOnly);
        Assert.True(status.HasFlag(FOk));
        Assert.Equal(lowOnly, h.Mmio.NegotiatedFeatures);

        Assert.Equal((1, (byte)BlkStatus.Ok), h.Flush());
        Assert.Equal((1, (byte)BlkStatus.Ok), h.Flush());

        var warnings = h.Log.Lines.Where(l => l.Level == LogLevel.Warning && l.Message.Contains("bit 32")).ToList();
        Assert.Single(warnings);
        Assert.Contains("VIRTIO_F_VERSION_1", warnings[0].Message);
    }

    [Fact]
    public void QueueNumMax_is_0_for_a_queue_that_does_not_exist_4_2_2()
    {
        using var h = new MmioHarness(new BlkDeviceOptions { NumQueues = 2 });
        foreach (var (sel, expected) in new[] { (0u, 64u), (1u, 64u), (2u, 0u), (64u, 0u), (uint.MaxValue, 0u) })
        {
            h.Write(R.QueueSel, sel);
            Assert.Equal(expected, h.Read(R.QueueNumMax));
        }
        h.Write(R.QueueSel, 2);
        h.Write(R.QueueReady, 1);
        Assert.Equal(0u, h.Read(R.QueueReady));
        Assert.Contains(h.Blk.Breaches.Breaches, b => b.Section == "4.2.3.2");
    }

    [Theory]
    [InlineData(0x1000UL, 0x2000UL, 0x3000UL)]           // below guest RAM
    [InlineData(0x4000_0000UL, 0x4000_1000UL, 0x4040_0000UL)] // used ring just past the end of RAM
    [InlineData(0x4000_0008UL, 0x4000_1000UL, 0x4000_2000UL)] // descriptor table misaligned
    public void A_ring_outside_guest_memory_sets_DEVICE_NEEDS_RESET_with_a_config_change_interrupt_2_1_2(ulong desc, ulong avail, ulong used)
    {
        using var h = new MmioHarness();
        h.SetStatus(Ack | Drv);
        h.WriteDriverFeatures(Modern);
        h.SetStatus(Ack | Drv | FOk);
        h.SetupQueue(desc: desc, driver: avail, device: used);

        Assert.Equal(0u, h.Read(R.QueueReady));
        Assert.True(h.Status.HasFlag(DeviceStatus.DeviceNeedsReset));
        Assert.Equal(R.InterruptConfigChange, h.Read(R.InterruptStatus) & R.InterruptConfigChange);
        Assert.True(h.Interrupts > 0);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(48u)]   // not a power of two
    [InlineData(128u)]  // above QueueNumMax
    public void An_illegal_QueueNum_sets_DEVICE_NEEDS_RESET_4_2_3_2(uint num)
    {
        using var h = new MmioHarness();
        h.SetStatus(Ack | Drv);
        h.WriteDriverFeatures(Modern);
        h.SetStatus(Ack | Drv | FOk);
        h.SetupQueue(size: num);
        Assert.Equal(0u, h.Read(R.QueueReady));
        Assert.True(h.Status.HasFlag(DeviceStatus.DeviceNeedsReset));
    }

    [Fact]
    public void A_corrupt_ring_in_operation_sets_DEVICE_NEEDS_RESET_and_stops_the_queue_2_1_2()
    {
        using var h = new MmioHarness();
        h.Initialize(Modern);
        h.Ring.Offer(999);
        h.Mmio.ProcessQueue(0);

        Assert.True(h.Status.HasFlag(DeviceStatus.DeviceNeedsReset));
        Assert.Equal(R.InterruptConfigChange, h.Read(R.InterruptStatus) & R.InterruptConfigChange);
        // The device no longer consumes buffers until reset.
        h.Ring.SetAvailSlot(0, h.Ring.Chain(Buf.W(h.Ring.Alloc(1), 1)));
        h.Mmio.ProcessQueue(0);
        Assert.Equal(0, h.Ring.UsedIdx);
        // Writing status with NEEDS_RESET still set does not clear it; only reset does.
        h.SetStatus(Ack | Drv | FOk | DOk);
        Assert.True(h.Status.HasFlag(DeviceStatus.DeviceNeedsReset));
        h.SetStatus(0);
        Assert.Equal(0u, h.Read(R.Status));
    }

    [Fact]
    public void No_buffer_is_consumed_before_DRIVER_OK_2_1_2()
    {
        using var h = new MmioHarness();
        h.Initialize(Modern, driverOk: false);
        var header = h.Ring.Alloc(16);
        new BlkRequestHeader((uint)BlkRequestType.Flush, 0, 0).Write(h.Ring.Span(header, 16));
        h.Ring.Offer(h.Ring.Chain(Buf.R(header, 16), Buf.W(h.Ring.Alloc(1), 1)));
        h.Mmio.ProcessQueue(0);
        Assert.Equal(0, h.Ring.UsedIdx);
        Assert.Equal(0u, h.Read(R.InterruptStatus));

        var notified = h.Notified;
        h.SetStatus(Ack | Drv | FOk | DOk);
        Assert.True(h.Notified > notified); // chains made available earlier are picked up now
        h.Mmio.ProcessQueue(0);
        Assert.Equal(1, h.Ring.UsedIdx);
    }

    [Fact]
    public void InterruptStatus_holds_each_event_until_acknowledged_4_2_2_1()
    {
        using var h = new MmioHarness();
        h.Initialize(Modern);
        Assert.Equal(0u, h.Read(R.InterruptStatus));
        h.Flush();
        Assert.Equal(R.InterruptUsedBuffer, h.Read(R.InterruptStatus));
        var raised = h.Interrupts;
        Assert.True(raised > 0);

        h.Write(R.InterruptAck, R.InterruptConfigChange); // acknowledging another bit clears nothing
        Assert.Equal(R.InterruptUsedBuffer, h.Read(R.InterruptStatus));
        h.Write(R.InterruptAck, R.InterruptUsedBuffer);
        Assert.Equal(0u, h.Read(R.InterruptStatus));
    }

    [Fact]
    public void Notifications_name_an_existing_queue_and_come_after_DRIVER_OK_4_2_3_3()
    {
        using var h = new MmioHarness();
        h.Write(R.QueueNotify, 0);
        Assert.Contains(h.Blk.Breaches.Breaches, b => b.Section == "3.1.1");
        h.Initialize(Modern);
        var before = h.Notified;
        h.Write(R.QueueNotify, 5);
        Assert.Equal(before, h.Notified);
        Assert.Contains(h.Blk.Breaches.Breaches, b => b.Section == "4.2.3.3");
        h.Write(R.QueueNotify, 0);
        Assert.Equal(before + 1, h.Notified);
    }

    [Theory]
    [InlineData(R.Status, 1)]
    [InlineData(R.Status, 2)]
    [InlineData(R.Status + 1, 4)]
    public void Control_registers_take_only_aligned_32_bit_accesses_4_2_2_2(uint offset, int width)
    {
        using var h = new MmioHarness();
        h.Mmio.Write(offset, (uint)Ack, width);
        Assert.Equal(0u, h.Read(R.Status));
        Assert.Equal(0u, h.Mmio.Read(R.MagicValue, width == 4 ? 2 : width));
        Assert.Contains(h.Blk.Breaches.Breaches, b => b.Section == "4.2.2.2");
    }

    [Fact]
    public void Config_space_is_read_at_any_width_from_0x100_and_zero_past_its_end_4_2_2()
    {
        using var h = new MmioHarness();
        var capacity = (ulong)(1 << 20) / 512;
        Assert.Equal((uint)capacity, h.Mmio.Read(R.Config + 0, 4));
        Assert.Equal((uint)(capacity >> 32), h.Mmio.Read(R.Config + 4, 4));
        Assert.Equal((uint)(capacity & 0xff), h.Mmio.Read(R.Config + 0, 1));
        Assert.Equal((uint)(capacity & 0xffff), h.Mmio.Read(R.Config + 0, 2));
        Assert.Equal(1u, h.Mmio.Read(R.Config + BlkConfig.OffNumQueues, 2));
        Assert.Equal(0u, h.Mmio.Read(R.Config + 0x100, 4));
        Assert.Equal(0u, h.Mmio.Read(R.Config + 0x1000_0000, 4));
        // Writes to config space are accepted and ignored (no VIRTIO_BLK_F_CONFIG_WCE).
        h.Mmio.Write(R.Config, 0xffffffff, 4);
        Assert.Equal((uint)capacity, h.Mmio.Read(R.Config + 0, 4));
    }
}

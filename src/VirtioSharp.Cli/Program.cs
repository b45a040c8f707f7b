using System.CommandLine;
using VirtioSharp.Cli;
using VirtioSharp.Cli.Commands;

var root = new RootCommand("vblk: a virtio block-device stack. Shows, serves, measures and checks virtio-blk over virtio-mmio and vhost-user.");
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(ServeCommand.Create());
root.Subcommands.Add(IoCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(ViewCommand.Create());
return await CliRunner.RunAsync(root, args);

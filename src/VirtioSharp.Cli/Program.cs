using System.CommandLine;
using VirtioSharp.Cli.Commands;

var root = new RootCommand("vblk: a virtio block device stack");
root.Add(ServeCommand.Create());
root.Add(IoCommand.Create());
root.Add(BenchCommand.Create());
return await root.Parse(args).InvokeAsync();
